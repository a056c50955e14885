"""Sinkhorn-Knopp pseudo-labels with a cluster prior: fast on two cores, safe for sharp posteriors, distributable.

SeLaVi labels N samples with K clusters by solving ``Q = diag(beta) P^lam diag(alpha)`` with row sums 1/N and
column sums r (the cluster marginal), then taking ``label_i = argmax_k Q_ik``
(../shared/docs/selavi-method.md §2). ``log_p`` is the mean of the video and audio log-posteriors, so
``P^lam = exp(lam * log_p) = (p_v p_a)^(lam/2)``.

Why not the official float64 scaling loop: ``exp(lam * log_p)`` underflows to exact zeros once posteriors are
confident (all but the top entry of a row; the whole row when video and audio are sure of different clusters, so
that p_v p_a is tiny everywhere), which leaves the scaling nothing to rebalance with or divides by zero; a float32
loop with a row-max shift still collapses to one cluster for logit scale 30 and lam=50 (perf-baselines §1.7).
Why not the log-domain loop: it costs ~100x per iteration.

What this module does instead (stabilised, truncated scaling; one idea from Schmitzer 2016, written from scratch):

* **Kernel with absorbed duals.** The working kernel is ``W_ik = exp(lam*logp_ik + g_k - m_i)`` where ``g`` is the
  log column scaling absorbed so far and ``m_i`` the row maximum, so every row's largest entry is exactly 1:
  no row can underflow and ``beta`` never becomes infinite.
* **Truncation with a certificate.** Entries more than ``THETA`` nats below their row maximum are dropped. The scaling
  iteration then runs on ``W`` with a relative column scaling ``v = exp(g_now - g)``. While
  ``log(max v / min v) <= THETA - TAU`` every dropped entry weighs less than ``exp(-TAU)`` (1e-11) of its row's kept
  maximum, i.e. far below float32 rounding. When the drift exceeds that, ``v`` is absorbed into ``g`` and the kernel
  is rebuilt. At lam=20 only ~2 % of the entries survive (86 % already underflow in float32), so the kernel is a
  small CSR matrix that stays in cache and an iteration costs a fraction of one streaming read of ``log_p``. When the
  kept fraction exceeds ``DENSE_FRACTION`` (flat posteriors early in training) a dense float32 buffer is used.
* **Empty columns are repaired exactly.** A cluster whose column holds no kept mass (the adversarial case) gets the
  exact log-domain column update ``g_k = log r_k - logsumexp_i(log beta_i + lam*logp_ik)`` from one pass over
  ``log_p``, after which the kernel is rebuilt around it. No NaN or inf can arise, and no fallback precision is needed.
* **Exact, order-free reductions.** Each plan entry is converted to a fixed-point int64 before it is summed (the
  stopping error too), and per-row arithmetic is strict IEEE (no fast-math), so nothing depends on the thread split,
  the row order or how rows are sharded across ranks: ``sinkhorn_knopp_distributed`` all-reduces those integers and
  reproduces the single-process labels bit for bit, and the iteration may pick 1 or 2 threads by timing.
* **Labels** are ``argmax_k(lam*logp_ik + log alpha_k)`` read straight from ``log_p`` (beta does not move an argmax).

Stopping rule (official): every ``check_every`` (10) iterations ``err = sum_i |beta_old_i / beta_new_i - 1|``;
stop when ``err <= tol`` or after ``max_iter`` iterations. One iteration is a column update followed by a row update,
started from ``beta = 1/N`` in the row-normalised gauge (the official code starts from 1/N in the unnormalised gauge,
which is what underflows; the fixed point is the same).

``sinkhorn_reference`` is the plain float64 log-domain algorithm (scipy ``logsumexp``), kept as the oracle for tests.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")  # the default omp layer stalls ~20 ms per region here

import numba as nb  # noqa: E402
import numpy as np  # noqa: E402
from llvmlite import ir as llvm_ir  # noqa: E402
from numba import types  # noqa: E402
from numba.core import cgutils  # noqa: E402
from numba.extending import intrinsic  # noqa: E402

from selavi_core.config import SinkhornSpec  # noqa: E402
from selavi_core.errors import SelaviError  # noqa: E402

if nb.config.THREADING_LAYER == "default":  # numba imported earlier (e.g. by umap): still choose before first launch
    from numba.np.ufunc import parallel as _nb_parallel

    if not getattr(_nb_parallel, "_is_initialized", True):
        nb.config.THREADING_LAYER = "workqueue"

_SPEC = SinkhornSpec()

#: Width (nats of ``lam*log_p + g``) below each row's maximum that the working kernel keeps. exp(-45) ~ 3e-20 is
#: a normal float32, so kept entries never become subnormal (slow) or zero.
THETA = 45.0
#: Precision margin: the kernel is rebuilt before a dropped entry can weigh more than exp(-TAU) ~ 1e-11 of its row.
TAU = 25.0
#: Above this kept fraction of N*K a dense float32 kernel (one streaming read per iteration) beats CSR.
DENSE_FRACTION = 0.25
#: Below this many kernel entries (global), kernels run on one thread: thread wake-ups cost more than the work.
SERIAL_WORK = 400_000
#: Cost of one CSR row in kernel entries, for splitting rows between threads (measured: ~5 entries).
_ROW_COST = 5
#: Fixed-point resolution of the stopping error: err is summed as integers in units of 2**-ERR_BITS.
ERR_BITS = 30


class SinkhornInputError(SelaviError, ValueError):
    """Bad input to Sinkhorn (shape, NaN, a marginal that is not a positive vector): a ValueError users can act on."""


@dataclass(frozen=True)
class SinkhornResult:
    """Labels and diagnostics of one Sinkhorn-Knopp solve.

    ``labels`` (N,) int64 are the hard pseudo-labels (local rows in the distributed version). ``marginal`` is the
    achieved column marginal of the soft plan ``Q`` at the last iterate (whose rows sum to exactly 1/N); ``target`` is
    the normalised marginal asked for. ``log_alpha`` is the absolute log column scaling: ``Q_ik`` is proportional
    within a row to ``exp(lam*log_p_ik + log_alpha_k)``, which is how the soft plan can be rebuilt (see
    ``soft_plan``). ``counts`` are the hard-label counts over all rows (all ranks).
    """

    labels: np.ndarray
    n_iter: int
    error: float
    marginal: np.ndarray
    target: np.ndarray
    log_alpha: np.ndarray
    counts: np.ndarray
    converged: bool
    lam: float
    tol: float
    max_iter: int
    n_rows: int  # rows over all ranks
    storage: str  # "sparse" | "dense" | "reference"
    density: float  # kept fraction of N*K in the last kernel build
    rebuilds: int  # kernel rebuilds after the first build (dual absorption)
    repairs: int  # exact log-domain column updates for clusters with no kept mass
    precision: str
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase: build, iterate, repair, labels

    @property
    def capped(self) -> bool:
        """True when the iteration cap was hit before the stopping rule was met."""
        return not self.converged


# --------------------------------------------------------------------------------------------------------------------
# numba kernels. Each is a serial ``_*_chunk`` function over a row range, called directly for small problems and by a
# parallel driver (once per thread) for large ones; a plain loop compiles ~3x tighter than a prange body.
# Determinism: kernels are compiled WITHOUT fast-math, so every per-row value is fixed by IEEE rules (no FMA contraction,
# no reassociation), whatever LLVM inlines or vectorises; the only flagged operation is the row maximum, which is exact
# in any order. Cross-row sums are int64. Results are therefore bit-identical for any thread count, row order or
# sharding, which is what lets the distributed solver reproduce the single-process labels exactly.
# --------------------------------------------------------------------------------------------------------------------


@nb.njit(cache=True)
def _row_bad(row):  # pragma: no cover - compiled
    """NaN or +inf entries of one row (``x != x`` survives because nothing here is compiled with fast-math)."""
    bad = 0
    for k in range(row.shape[0]):
        x = row[k]
        if x != x or x == np.inf:
            bad += 1
    return bad


@intrinsic
def _maxnum(typingctx, a, b):  # pragma: no cover - compiled
    """``llvm.maxnum.f64`` flagged for reassociation: ``if x > m`` reductions stay scalar in numba; this one is
    vectorised (3.6x faster row maxima here) and, max being exact, still deterministic. NaN is validated apart."""
    sig = types.float64(types.float64, types.float64)

    def codegen(context, builder, signature, args):
        fnty = llvm_ir.FunctionType(llvm_ir.DoubleType(), [llvm_ir.DoubleType(), llvm_ir.DoubleType()])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.maxnum.f64")
        return builder.call(fn, args, fastmath=("nnan", "nsz", "reassoc"))  # max is exact in any order

    return sig, codegen


@nb.njit(cache=True)
def _row_scores(row, lam, g, tmp):  # pragma: no cover - compiled
    """``tmp = lam*row + g`` and its maximum, vectorised."""
    m = -np.inf
    for k in range(row.shape[0]):
        x = lam * row[k] + g[k]
        tmp[k] = x
        m = _maxnum(m, x)
    return m


@nb.njit(cache=True)
def _scan_chunk(logp, lam, g, theta, lo, hi, rowmax, counts, validate, flags):  # pragma: no cover - compiled
    tmp = np.empty(logp.shape[1])
    bad = 0
    empty = 0
    for i in range(lo, hi):
        row = logp[i]
        if validate:
            bad += _row_bad(row)
        m = _row_scores(row, lam, g, tmp)
        if m == -np.inf:
            empty += 1
        thr = m - theta
        c = 0
        for k in range(tmp.shape[0]):
            c += tmp[k] >= thr
        rowmax[i] = m
        counts[i] = c
    flags[0] = bad
    flags[1] = empty


@nb.njit(parallel=True, cache=True)
def _scan_rows(logp, lam, g, theta, rowmax, counts, validate, nt):  # pragma: no cover - compiled
    """Row maxima of ``lam*logp + g`` and how many entries lie within ``theta`` of them; counts bad values."""
    n_rows = logp.shape[0]
    flags = np.zeros((nt, 2), np.int64)  # [NaN or +inf entries, rows without any finite entry]
    chunk = (n_rows + nt - 1) // nt
    for t in nb.prange(nt):
        lo = min(n_rows, t * chunk)
        _scan_chunk(logp, lam, g, theta, lo, min(n_rows, lo + chunk), rowmax, counts, validate, flags[t])
    return flags


@nb.njit(cache=True)
def _fill_chunk(logp, lam, g, theta, rowmax, lo, hi, starts, ends, vals, idx, dense):  # pragma: no cover - compiled
    tmp = np.empty(logp.shape[1])
    n_cols = logp.shape[1]
    sparse = dense.shape[0] == 0
    for i in range(lo, hi):
        _row_scores(logp[i], lam, g, tmp)
        m = rowmax[i]
        thr = m - theta
        if sparse:
            p = starts[i]
            end = ends[i]
            for k in range(n_cols):
                if tmp[k] >= thr and p < end:
                    vals[p] = np.exp(tmp[k] - m)
                    idx[p] = k
                    p += 1
            while p < end:  # only if rounding differed from the scan: a zero entry is harmless
                vals[p] = 0.0
                idx[p] = 0
                p += 1
        else:
            wrow = dense[i - lo]
            for k in range(n_cols):
                wrow[k] = np.exp(tmp[k] - m) if tmp[k] >= thr else 0.0


@nb.njit(parallel=True, cache=True)
def _fill(logp, lam, g, theta, rowmax, starts, ends, vals, idx, dense, nt):  # pragma: no cover - compiled
    """Kernel entries ``exp(lam*logp + g - rowmax)`` kept by ``_scan_rows``: row i's into ``vals/idx[starts_i:ends_i]``
    (CSR) or, when ``dense`` has rows, into that float32 buffer with exact zeros below ``theta`` (never subnormal)."""
    n_rows = logp.shape[0]
    chunk = (n_rows + nt - 1) // nt
    for t in nb.prange(nt):
        lo = min(n_rows, t * chunk)
        hi = min(n_rows, lo + chunk)
        _fill_chunk(
            logp, lam, g, theta, rowmax, lo, hi, starts, ends, vals, idx, dense[lo:hi] if dense.shape[0] else dense
        )


@nb.njit(cache=True)
def _pass_sparse_chunk(
    offsets, vals, idx, v, beta, c, scale, mode, err_scale, err_cap, lo, hi, acc
):  # pragma: no cover
    n_cols = v.shape[0]
    tmp = np.empty(n_cols)
    e = 0
    for i in range(lo, hi):
        p0 = offsets[i]
        n = offsets[i + 1] - p0
        s = 0.0
        for j in range(n):
            x = vals[p0 + j] * v[idx[p0 + j]]
            tmp[j] = x
            s += x
        if mode == 0:
            a = scale * beta[i] / c
        else:
            rs = 1.0 / s
            bnew = c * rs
            if mode == 2:
                d = abs(beta[i] / bnew - 1.0)
                e += np.int64(min(d, err_cap) * err_scale + 0.5)
            beta[i] = bnew
            a = scale * rs
        for j in range(n):
            acc[idx[p0 + j]] += np.int64(tmp[j] * a)
    acc[n_cols] = e


@nb.njit(cache=True)
def _pass_dense_chunk(w, v, beta, c, scale, mode, err_scale, err_cap, lo, hi, acc):  # pragma: no cover - compiled
    n_cols = v.shape[0]
    k8 = n_cols - n_cols % 8
    e = 0
    for i in range(lo, hi):
        row = w[i]
        if mode == 0:
            a = scale * beta[i] / c
        else:
            # eight fixed accumulators: a sum order that is written out, so no fast-math is needed to pipeline it
            s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
            for k in range(0, k8, 8):
                s0 += row[k] * v[k]
                s1 += row[k + 1] * v[k + 1]
                s2 += row[k + 2] * v[k + 2]
                s3 += row[k + 3] * v[k + 3]
                s4 += row[k + 4] * v[k + 4]
                s5 += row[k + 5] * v[k + 5]
                s6 += row[k + 6] * v[k + 6]
                s7 += row[k + 7] * v[k + 7]
            s = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
            for k in range(k8, n_cols):
                s += row[k] * v[k]
            rs = 1.0 / s
            bnew = c * rs
            if mode == 2:
                d = abs(beta[i] / bnew - 1.0)
                e += np.int64(min(d, err_cap) * err_scale + 0.5)
            beta[i] = bnew
            a = scale * rs
        for k in range(n_cols):
            acc[k] += np.int64(row[k] * v[k] * a)
    acc[n_cols] = e


@nb.njit(parallel=True, cache=True)
def _pass(offsets, vals, idx, dense, bounds, v, beta, c, scale, mode, err_scale, err_cap):  # pragma: no cover
    """One streaming pass over the kernel (CSR, or ``dense`` when it has rows): row update ``beta = c / (W v)`` and
    the int64 column masses of the new plan, each row read once and kept in L1 for both of its loops. Thread t takes
    stored rows ``bounds[t]:bounds[t+1]``.

    mode 0: no row update (beta stays), plan mass ``beta W v``; 1: row update; 2: row update and stopping error.
    Returns int64 (K + 1): column masses in units of ``c * 2**-Q`` (``scale = 2**Q``) and, last, the error in units
    of ``1 / err_scale``.
    """
    n_cols = v.shape[0]
    nt = bounds.shape[0] - 1
    acc = np.zeros((nt, n_cols + 1), np.int64)
    for t in nb.prange(nt):
        if dense.shape[0]:
            _pass_dense_chunk(dense, v, beta, c, scale, mode, err_scale, err_cap, bounds[t], bounds[t + 1], acc[t])
        else:
            _pass_sparse_chunk(
                offsets, vals, idx, v, beta, c, scale, mode, err_scale, err_cap, bounds[t], bounds[t + 1], acc[t]
            )
    return acc.sum(axis=0)


@nb.njit(cache=True)
def _argmax_chunk(logp, lam, g, lo, hi, labels):  # pragma: no cover - compiled
    tmp = np.empty(logp.shape[1])
    for i in range(lo, hi):
        m = _row_scores(logp[i], lam, g, tmp)
        arg = 0
        for k in range(tmp.shape[0]):
            if tmp[k] == m:
                arg = k
                break
        labels[i] = arg


@nb.njit(parallel=True, cache=True)
def _argmax_rows(logp, lam, g, labels, nt):  # pragma: no cover - compiled
    """``labels_i = argmax_k(lam*logp_ik + g_k)`` (first maximum on ties, like numpy)."""
    n_rows = logp.shape[0]
    chunk = (n_rows + nt - 1) // nt
    for t in nb.prange(nt):
        lo = min(n_rows, t * chunk)
        _argmax_chunk(logp, lam, g, lo, min(n_rows, lo + chunk), labels)


@nb.njit(cache=True)
def _lse_chunk(logp, lam, cols, shift, cmax, scale, lo, hi, out_max, out_sum):  # pragma: no cover - compiled
    for i in range(lo, hi):
        row = logp[i]
        for j in range(cols.shape[0]):
            x = shift[i] + lam * row[cols[j]]
            if cmax.shape[0] == 0:
                if x > out_max[j]:
                    out_max[j] = x
            elif x - cmax[j] > -745.0:
                out_sum[j] += np.int64(np.exp(x - cmax[j]) * scale)


@nb.njit(parallel=True, cache=True)
def _column_lse(logp, lam, cols, shift, cmax, scale, nt):  # pragma: no cover - compiled
    """Over the local rows, per selected column: without ``cmax``, the max of ``shift_i + lam*logp_ik``; with it,
    ``sum_i exp(shift_i + lam*logp_ik - cmax_k)`` in int64 fixed point (``scale`` per unit term)."""
    n_rows = logp.shape[0]
    nc = cols.shape[0]
    part_max = np.full((nt, nc), -np.inf)
    part_sum = np.zeros((nt, nc), np.int64)
    chunk = (n_rows + nt - 1) // nt
    for t in nb.prange(nt):
        lo = min(n_rows, t * chunk)
        _lse_chunk(logp, lam, cols, shift, cmax, scale, lo, min(n_rows, lo + chunk), part_max[t], part_sum[t])
    out_max = np.full(nc, -np.inf)
    for t in range(nt):
        for j in range(nc):
            out_max[j] = max(out_max[j], part_max[t, j])
    return out_max, part_sum.sum(axis=0)


# --------------------------------------------------------------------------------------------------------------------
# Reductions: the single-process solver and the distributed one share every line except these.
# --------------------------------------------------------------------------------------------------------------------


class _Reducer(Protocol):
    def sum_int(self, a: np.ndarray) -> np.ndarray: ...

    def max_float(self, a: np.ndarray) -> np.ndarray: ...

    def min_float(self, a: np.ndarray) -> np.ndarray: ...


class _LocalReducer:
    """One process holds every row: reductions are the identity."""

    def sum_int(self, a: np.ndarray) -> np.ndarray:
        return a

    def max_float(self, a: np.ndarray) -> np.ndarray:
        return a

    def min_float(self, a: np.ndarray) -> np.ndarray:
        return a


class _TorchReducer:
    """All-reduce through torch.distributed (gloo tensors on CPU, CUDA tensors for nccl). Integer sums and float
    max/min are exact in any order, which is what makes the distributed labels identical to the single-process ones."""

    def __init__(self, group: Any = None):
        import torch
        import torch.distributed as dist

        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("sinkhorn_knopp_distributed needs an initialised torch.distributed process group")
        self._torch = torch
        self._dist = dist
        self.group = group
        backend = str(dist.get_backend(group)).lower()
        self.device = torch.device("cuda", torch.cuda.current_device()) if "nccl" in backend else torch.device("cpu")

    def _reduce(self, a: np.ndarray, op: Any) -> np.ndarray:
        t = self._torch.from_numpy(np.ascontiguousarray(a)).to(self.device, copy=True)
        self._dist.all_reduce(t, op=op, group=self.group)
        return t.cpu().numpy()

    def sum_int(self, a: np.ndarray) -> np.ndarray:
        return self._reduce(np.asarray(a, dtype=np.int64), self._dist.ReduceOp.SUM)

    def max_float(self, a: np.ndarray) -> np.ndarray:
        return self._reduce(np.asarray(a, dtype=np.float64), self._dist.ReduceOp.MAX)

    def min_float(self, a: np.ndarray) -> np.ndarray:
        return self._reduce(np.asarray(a, dtype=np.float64), self._dist.ReduceOp.MIN)


def _agree(red: _Reducer, local_problem: str | None) -> None:
    """Raise on every rank when any rank found a problem (a lone raise would leave the others in an all-reduce)."""
    flag = red.sum_int(np.array([0 if local_problem is None else 1], np.int64))
    if flag[0]:
        raise SinkhornInputError(local_problem or "invalid Sinkhorn input on another rank")


# --------------------------------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------------------------------


def _as_numpy(log_p: Any) -> np.ndarray:
    """numpy view (float32/float64, C-contiguous) of an array or torch tensor; torch tensors are moved to CPU."""
    if type(log_p).__module__.startswith("torch"):
        import torch

        t = log_p.detach()
        if t.dtype not in (torch.float32, torch.float64):
            t = t.to(torch.float32)
        log_p = t.cpu().numpy()
    arr = np.asarray(log_p)
    if arr.dtype not in (np.float32, np.float64):
        if not np.issubdtype(arr.dtype, np.number):
            raise SinkhornInputError(f"log_p must be a numeric (N, K) array, got dtype {arr.dtype}")
        arr = arr.astype(np.float32 if arr.dtype == np.float16 else np.float64)
    return np.ascontiguousarray(arr)


def _check_shape(arr: np.ndarray) -> str | None:
    if arr.ndim != 2:
        return f"log_p must be 2-D (N samples, K clusters), got shape {arr.shape}"
    if arr.shape[1] < 1:
        return f"log_p needs at least one cluster column, got shape {arr.shape}"
    return None


def normalise_marginal(marginal: Any, k: int) -> np.ndarray:
    """The target cluster marginal as a float64 probability vector; uniform when None.

    Raises SinkhornInputError unless it is a finite, strictly positive vector of length K (a zero target would ask
    for an empty cluster, which the scaling cannot express).
    """
    if marginal is None:
        return np.full(k, 1.0 / k)
    if type(marginal).__module__.startswith("torch"):
        marginal = marginal.detach().cpu().numpy()
    try:
        r = np.asarray(marginal, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise SinkhornInputError(f"marginal must be a vector of {k} positive numbers: {err}") from None
    if r.ndim != 1 or r.shape[0] != k:
        raise SinkhornInputError(f"marginal must have shape ({k},) to match log_p's {k} clusters, got {r.shape}")
    if not np.all(np.isfinite(r)):
        raise SinkhornInputError("marginal contains NaN or infinite values")
    if np.any(r <= 0):
        raise SinkhornInputError(f"marginal must be strictly positive; cluster {int(np.argmin(r))} has {r.min():g}")
    return r / r.sum()


def _check_params(lam: float, tol: float, max_iter: int) -> None:
    if not (np.isfinite(lam) and lam > 0):
        raise SinkhornInputError(f"lam must be a positive finite number, got {lam}")
    if not (np.isfinite(tol) and tol >= 0):
        raise SinkhornInputError(f"tol must be a non-negative finite number, got {tol}")
    if int(max_iter) != max_iter or max_iter < 1:
        raise SinkhornInputError(f"max_iter must be a positive integer, got {max_iter}")


# --------------------------------------------------------------------------------------------------------------------
# The solver
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class _Kernel:
    """The truncated working kernel ``exp(lam*logp + g - rowmax)`` of the local rows."""

    storage: str
    rowmax: np.ndarray  # (N_local,) float64
    density: float
    offsets: np.ndarray  # CSR over *stored* rows (empty arrays for the dense kernel)
    vals: np.ndarray
    idx: np.ndarray
    dense: np.ndarray  # (N_local, K) float32, or (0, K) for the sparse kernel
    perm: np.ndarray | None  # stored row j is local row perm[j] (CSR rows sorted by length); None: identity
    bounds: dict[int, np.ndarray]  # thread count -> stored-row boundaries of equal work

    def thread_bounds(self, nt: int) -> np.ndarray:
        """Row boundaries giving each thread about equal work (entries plus a per-row cost)."""
        if nt not in self.bounds:
            n = self.rowmax.shape[0]
            if self.perm is None:
                cost = np.arange(n + 1, dtype=np.float64)
            else:
                cost = self.offsets + _ROW_COST * np.arange(n + 1)
            b = np.searchsorted(cost, cost[-1] * np.arange(nt + 1) / nt).astype(np.int64)
            b[0], b[-1] = 0, n
            self.bounds[nt] = b
        return self.bounds[nt]

    def natural(self, stored: np.ndarray) -> np.ndarray:
        """A per-row vector from stored order back to local row order."""
        if self.perm is None:
            return stored
        out = np.empty_like(stored)
        out[self.perm] = stored
        return out

    def stored(self, natural: np.ndarray) -> np.ndarray:
        return natural if self.perm is None else natural[self.perm]


class _ThreadChooser:
    """Runs the iteration pass on one thread or on all, whichever measured faster (results cannot depend on it).

    On this project's shared 2-core machines a parallel launch can wait a scheduler tick for a busy core (measured:
    one thread as fast as two at the median, with occasional 5x stalls), while on a quiet machine two threads are
    nearly twice as fast. Both are timed at the start and the slower one is re-probed every ``PROBE_EVERY`` passes.
    """

    PROBE_EVERY = 50

    def __init__(self, most: int):
        self.most = most
        self.times: dict[int, deque[float]] = {1: deque(maxlen=3), most: deque(maxlen=3)}
        self.calls = 0

    def pick(self) -> int:
        self.calls += 1
        if self.most == 1:
            return 1
        if self.calls <= 4:
            return self.most if self.calls % 2 else 1
        best = min(self.times, key=lambda n: statistics.median(self.times[n]))
        if self.calls % self.PROBE_EVERY == 0:
            return 1 if best == self.most else self.most
        return best

    def record(self, nt: int, seconds: float) -> None:
        self.times[nt].append(seconds)


class _Solver:
    def __init__(self, logp: np.ndarray, r: np.ndarray, lam: float, red: _Reducer):
        self.logp = logp
        self.r = r
        self.lam = float(lam)
        self.red = red
        self.n_local, self.k = logp.shape
        self.n_total = int(red.sum_int(np.array([self.n_local], np.int64))[0])
        if self.n_total == 0:
            raise SinkhornInputError("log_p has no rows")
        self.c = 1.0 / self.n_total
        bits = math.ceil(math.log2(self.n_total + 1))
        self.q_scale = float(2 ** (62 - bits))  # one row's plan mass c == 2**Q units, N rows fit in an int64
        self.err_scale = float(2**ERR_BITS)
        self.err_cap = float(2 ** (62 - ERR_BITS - bits))  # per-row cap so N terms fit in an int64
        self.threads = nb.get_num_threads()
        self.chooser = _ThreadChooser(self.threads)
        self.rebuilds = -1
        self.repairs = 0
        self.timings = {"build": 0.0, "iterate": 0.0, "repair": 0.0, "labels": 0.0}
        idx_type = np.int16 if self.k <= np.iinfo(np.int16).max else np.int32
        self._no_offsets = np.zeros(1, np.int64)
        self._no_vals = np.empty(0, np.float32)
        self._no_idx = np.empty(0, idx_type)
        self._no_dense = np.empty((0, self.k), np.float32)
        self._no_rows = np.empty(0, np.int64)

    def _nt(self, work: int) -> int:
        return 1 if work < SERIAL_WORK else self.threads

    def build(self, g: np.ndarray, validate: bool = False) -> _Kernel:
        """(Re)build the truncated kernel around the absolute column duals ``g``."""
        t0 = time.perf_counter()
        try:
            return self._build(g, validate)
        finally:
            self.timings["build"] += time.perf_counter() - t0

    def _build(self, g: np.ndarray, validate: bool) -> _Kernel:
        n, k = self.n_local, self.k
        rowmax = np.empty(n, np.float64)
        counts = np.empty(n, np.int64)
        nt_scan = self._nt(self.n_total * k)
        if nt_scan == 1:  # serial kernels are called directly: a parallel launch costs ms on a busy machine
            flags = np.zeros((1, 2), np.int64)
            _scan_chunk(self.logp, self.lam, g, THETA, 0, n, rowmax, counts, validate, flags[0])
        else:
            flags = _scan_rows(self.logp, self.lam, g, THETA, rowmax, counts, validate, nt_scan)
        flags = flags.sum(axis=0)
        if validate:
            problem = None
            if flags[0]:
                problem = f"log_p contains {int(flags[0])} NaN or +inf values"
            elif flags[1]:
                problem = f"{int(flags[1])} rows of log_p are entirely -inf (a sample with no possible cluster)"
            _agree(self.red, problem)
        nnz = int(counts.sum())
        nnz_total = int(self.red.sum_int(np.array([nnz], np.int64))[0])
        density = nnz_total / (self.n_total * k)
        self.rebuilds += 1
        if density > DENSE_FRACTION:
            dense = getattr(self, "_dense_buf", None)
            if dense is None:
                dense = self._dense_buf = np.empty((n, k), np.float32)
            self._fill(g, rowmax, self._no_rows, self._no_rows, self._no_vals, self._no_idx, dense, nt_scan)
            return _Kernel(
                "dense",
                rowmax,
                density,
                offsets=self._no_offsets,
                vals=self._no_vals,
                idx=self._no_idx,
                dense=dense,
                perm=None,
                bounds={},
            )
        # rows are stored sorted by length: equal trip counts back to back make the pass's loop exits predictable
        # (1.9x faster); the int64 column sums do not depend on row order
        perm = np.argsort(counts.astype(np.uint16 if k < 65536 else np.int64), kind="stable")
        offsets = np.zeros(n + 1, np.int64)
        np.cumsum(counts[perm], out=offsets[1:])
        starts = np.empty(n, np.int64)
        starts[perm] = offsets[:-1]
        vals = np.empty(nnz, np.float32)
        idx = np.empty(nnz, self._no_idx.dtype)
        self._fill(g, rowmax, starts, starts + counts, vals, idx, self._no_dense, nt_scan)
        return _Kernel(
            "sparse", rowmax, density, offsets=offsets, vals=vals, idx=idx, dense=self._no_dense, perm=perm, bounds={}
        )

    def _fill(self, g, rowmax, starts, ends, vals, idx, dense, nt) -> None:
        if nt == 1:
            _fill_chunk(self.logp, self.lam, g, THETA, rowmax, 0, self.n_local, starts, ends, vals, idx, dense)
        else:
            _fill(self.logp, self.lam, g, THETA, rowmax, starts, ends, vals, idx, dense, nt)

    def step(self, ker: _Kernel, v: np.ndarray, beta: np.ndarray, mode: int) -> np.ndarray:
        """One pass over the kernel (``beta`` in stored row order); returns the globally reduced int64 column masses
        and error."""
        work = self.n_total * self.k if ker.storage == "dense" else int(ker.density * self.n_total * self.k)
        nt = 1 if work < SERIAL_WORK else self.chooser.pick()
        t0 = time.perf_counter()
        if nt > 1:
            out = _pass(
                ker.offsets,
                ker.vals,
                ker.idx,
                ker.dense,
                ker.thread_bounds(nt),
                v,
                beta,
                self.c,
                self.q_scale,
                mode,
                self.err_scale,
                self.err_cap,
            )
        else:
            out = np.zeros(self.k + 1, np.int64)
            args = (v, beta, self.c, self.q_scale, mode, self.err_scale, self.err_cap, 0, self.n_local, out)
            if ker.storage == "dense":
                _pass_dense_chunk(ker.dense, *args)
            else:
                _pass_sparse_chunk(ker.offsets, ker.vals, ker.idx, *args)
        dt = time.perf_counter() - t0
        if work >= SERIAL_WORK:
            self.chooser.record(nt, dt)
        self.timings["iterate"] += dt
        return self.red.sum_int(out)

    def exact_column_logsum(self, ker: _Kernel, beta: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``log sum_i beta_i exp(lam*logp_ik - rowmax_i)`` for the given columns, over all rows, in float64."""
        self.repairs += 1
        t0 = time.perf_counter()
        shift = np.log(ker.natural(beta)) - ker.rowmax
        nt = self._nt(self.n_total * self.k)
        cols = np.ascontiguousarray(cols, np.int64)
        cmax = self.red.max_float(self._column_lse(cols, shift, np.empty(0), nt)[0])
        if not np.all(np.isfinite(cmax)):
            bad = cols[~np.isfinite(cmax)]
            raise SinkhornInputError(
                f"cluster(s) {bad[:10].tolist()} have zero probability (log_p = -inf) in every row, "
                "so no labelling can give them a positive share"
            )
        total = self.red.sum_int(self._column_lse(cols, shift, cmax, nt)[1])
        self.timings["repair"] += time.perf_counter() - t0
        return cmax + np.log(total.astype(np.float64) / self.q_scale)

    def _column_lse(self, cols, shift, cmax, nt) -> tuple[np.ndarray, np.ndarray]:
        if nt > 1:
            return _column_lse(self.logp, self.lam, cols, shift, cmax, self.q_scale, nt)
        out_max = np.full(cols.shape[0], -np.inf)
        out_sum = np.zeros(cols.shape[0], np.int64)
        _lse_chunk(self.logp, self.lam, cols, shift, cmax, self.q_scale, 0, self.n_local, out_max, out_sum)
        return out_max, out_sum

    def solve(self, tol: float, max_iter: int, check_every: int) -> dict[str, Any]:
        k = self.k
        log_r = np.log(self.r)
        g = np.zeros(k)  # absolute log alpha absorbed in the kernel
        ker = self.build(g, validate=True)
        beta = np.full(self.n_local, self.c)  # row scaling relative to the kernel, in the kernel's stored row order
        v = np.ones(k)  # column scaling relative to the kernel
        out = self.step(ker, v, beta, 0)
        masses = out[:k]
        err = math.inf
        n_iter = 0
        converged = False
        for it in range(1, max_iter + 1):
            # column update: v <- v * r / (plan column mass); clusters without kept mass get the exact update
            logv = np.log(v)
            empty = masses == 0
            with np.errstate(divide="ignore"):
                logv_new = logv + log_r - np.log(masses.astype(np.float64) / (self.q_scale * self.n_total))
            if empty.any():
                cols = np.flatnonzero(empty)
                logv_new[cols] = log_r[cols] - self.exact_column_logsum(ker, beta, cols) - g[cols]
            if logv_new.max() - logv_new.min() > THETA - TAU:
                # absorb v into g (shifted so max g = 0) and rebuild; beta takes the shift and the new row maxima so
                # that the plan beta_i W_ik v_k, and with it the official error, is exactly unchanged
                g = g + logv_new
                shift = g.max()
                g -= shift
                old = ker
                ker = self.build(g)
                beta = ker.stored(old.natural(beta) * np.exp(ker.rowmax - old.rowmax + shift))
                v = np.ones(k)
            else:
                v = np.exp(logv_new)
            check = it % check_every == 0
            out = self.step(ker, v, beta, 2 if check else 1)
            masses = out[:k]
            n_iter = it
            if check:
                err = float(out[k]) / self.err_scale
                if err <= tol:
                    converged = True
                    break
        log_alpha = g + np.log(v)
        t0 = time.perf_counter()
        labels = np.empty(self.n_local, np.int64)
        nt = self._nt(self.n_total * k)
        if nt > 1:
            _argmax_rows(self.logp, self.lam, log_alpha, labels, nt)
        else:
            _argmax_chunk(self.logp, self.lam, log_alpha, 0, self.n_local, labels)
        counts = self.red.sum_int(np.bincount(labels, minlength=k).astype(np.int64))
        self.timings["labels"] = time.perf_counter() - t0
        achieved = masses.astype(np.float64)
        return {
            "labels": labels,
            "n_iter": n_iter,
            "error": err,
            "marginal": achieved / achieved.sum(),
            "log_alpha": log_alpha,
            "counts": counts,
            "converged": converged,
            "storage": ker.storage,
            "density": ker.density,
            "rebuilds": self.rebuilds,
            "repairs": self.repairs,
            "timings": self.timings,
        }


_PRECISION = "float32 kernel, float64 scalings, int64 fixed-point reductions, truncation < exp(-TAU) per row"


def _run(log_p: Any, marginal: Any, lam: float, tol: float, max_iter: int, red: _Reducer) -> SinkhornResult:
    t0 = time.perf_counter()
    _check_params(lam, tol, max_iter)
    arr = _as_numpy(log_p)
    _agree(red, _check_shape(arr))
    k = arr.shape[1]
    ks = red.min_float(np.array([k], np.float64)), red.max_float(np.array([k], np.float64))
    if ks[0][0] != ks[1][0]:
        raise SinkhornInputError("ranks disagree on the number of clusters K")
    problem = None
    try:
        r = normalise_marginal(marginal, k)
    except SinkhornInputError as err:
        problem, r = str(err), np.full(k, 1.0 / k)
    _agree(red, problem)
    if not np.array_equal(red.min_float(r), red.max_float(r)):
        raise SinkhornInputError("ranks passed different marginals")
    solver = _Solver(arr, r, lam, red)
    info = solver.solve(float(tol), int(max_iter), _SPEC.check_every)
    return SinkhornResult(
        target=r,
        lam=float(lam),
        tol=float(tol),
        max_iter=int(max_iter),
        n_rows=solver.n_total,
        precision=_PRECISION,
        seconds=time.perf_counter() - t0,
        **info,
    )


def sinkhorn_knopp(
    log_p: Any,
    marginal: Any = None,
    lam: float = _SPEC.lam,
    tol: float = _SPEC.tol,
    max_iter: int = _SPEC.max_iter,
) -> SinkhornResult:
    """Hard pseudo-labels for ``log_p`` ((N, K) log-posteriors, numpy or torch) whose soft plan has column marginal
    ``marginal`` (uniform when None; normalised) and row marginal 1/N.

    ``log_p`` may be float32 or float64 and need not be normalised per row (rows are shifted internally); ``-inf``
    means probability 0. It is never modified. Raises SinkhornInputError (a ValueError) on bad input.
    """
    return _run(log_p, marginal, lam, tol, max_iter, _LocalReducer())


def sinkhorn_knopp_distributed(
    log_p_shard: Any,
    marginal: Any = None,
    lam: float = _SPEC.lam,
    tol: float = _SPEC.tol,
    max_iter: int = _SPEC.max_iter,
    group: Any = None,
) -> SinkhornResult:
    """``sinkhorn_knopp`` over rows sharded across the ranks of a torch.distributed ``group``.

    Every rank passes only its own rows (any split, any sizes, possibly zero rows) and the same ``marginal``; every
    rank must call this collectively. Column masses and the stopping error are all-reduced as int64, so no rank holds
    the whole N x K matrix and the returned labels (of the local rows) equal the single-process labels exactly.
    ``counts``, ``marginal``, ``error`` and ``n_iter`` are global and identical on every rank.
    """
    return _run(log_p_shard, marginal, lam, tol, max_iter, _TorchReducer(group))


def soft_plan(log_p: Any, result: SinkhornResult) -> np.ndarray:
    """The dense float64 soft plan ``Q`` (rows sum to 1/N) of a result; for checks and small N only."""
    arr = _as_numpy(log_p).astype(np.float64)
    s = result.lam * arr + result.log_alpha
    s -= s.max(axis=1, keepdims=True)
    q = np.exp(s)
    q /= q.sum(axis=1, keepdims=True) * arr.shape[0]
    return q


def sinkhorn_reference(
    log_p: Any,
    marginal: Any = None,
    lam: float = _SPEC.lam,
    tol: float = _SPEC.tol,
    max_iter: int = _SPEC.max_iter,
) -> SinkhornResult:
    """Plain float64 log-domain Sinkhorn (scipy logsumexp): slow (two N x K exps per iteration) but simple; the
    oracle for tests and benchmarks. Same start, iteration and stopping rule as ``sinkhorn_knopp``."""
    from scipy.special import logsumexp

    t0 = time.perf_counter()
    _check_params(lam, tol, max_iter)
    arr = _as_numpy(log_p).astype(np.float64)
    problem = _check_shape(arr)
    if problem:
        raise SinkhornInputError(problem)
    n, k = arr.shape
    r = normalise_marginal(marginal, k)
    s = lam * arr
    log_c = -math.log(n)
    f = log_c - s.max(axis=1)
    err = math.inf
    converged = False
    n_iter = 0
    g = np.zeros(k)
    for it in range(1, max_iter + 1):
        g = np.log(r) - logsumexp(s + f[:, None], axis=0)
        f_new = log_c - logsumexp(s + g[None, :], axis=1)
        n_iter = it
        if it % _SPEC.check_every == 0:
            err = float(np.abs(np.exp(f - f_new) - 1.0).sum())
            f = f_new
            if err <= tol:
                converged = True
                break
        f = f_new
    labels = np.argmax(s + g, axis=1).astype(np.int64)
    achieved = np.exp(logsumexp(s + f[:, None] + g[None, :], axis=0))
    return SinkhornResult(
        labels=labels,
        n_iter=n_iter,
        error=err,
        marginal=achieved / achieved.sum(),
        target=r,
        log_alpha=g,
        counts=np.bincount(labels, minlength=k).astype(np.int64),
        converged=converged,
        lam=float(lam),
        tol=float(tol),
        max_iter=int(max_iter),
        n_rows=n,
        storage="reference",
        density=1.0,
        rebuilds=0,
        repairs=0,
        precision="float64 log-domain",
        seconds=time.perf_counter() - t0,
    )
