"""The iterative Sinkhorn-Knopp solver behind ``sinkhorn.sinkhorn_knopp``: stabilised, truncated scaling.

Why not the official float64 scaling loop: ``exp(lam * log_p)`` underflows to exact zeros once posteriors are
confident (all but the top entry of a row; the whole row when video and audio are sure of different clusters, so
that p_v p_a is tiny everywhere), which leaves the scaling nothing to rebalance with or divides by zero; a float32
loop with a row-max shift still collapses to one cluster for logit scale 30 and lam=50 (perf-baselines §1.7).
Why not the log-domain loop: it costs ~100x per iteration.

What this solver does instead (stabilised, truncated scaling; one idea from Schmitzer 2016, written from scratch):

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
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from selavi_core.selflabel.kernels import (
    argmax_chunk,
    argmax_rows,
    column_lse,
    fill_chunk,
    fill_rows,
    lse_chunk,
    num_threads,
    pass_dense_chunk,
    pass_rows,
    pass_sparse_chunk,
    scan_chunk,
    scan_rows,
)
from selavi_core.selflabel.problem import SinkhornInputError
from selavi_core.selflabel.reducers import Reducer, agree

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


@dataclass
class Kernel:
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


class ThreadChooser:
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


class Solver:
    def __init__(self, logp: np.ndarray, r: np.ndarray, lam: float, red: Reducer):
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
        self.threads = num_threads()
        self.chooser = ThreadChooser(self.threads)
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

    def build(self, g: np.ndarray, validate: bool = False) -> Kernel:
        """(Re)build the truncated kernel around the absolute column duals ``g``."""
        t0 = time.perf_counter()
        try:
            return self._build(g, validate)
        finally:
            self.timings["build"] += time.perf_counter() - t0

    def _build(self, g: np.ndarray, validate: bool) -> Kernel:
        n, k = self.n_local, self.k
        rowmax = np.empty(n, np.float64)
        counts = np.empty(n, np.int64)
        nt_scan = self._nt(self.n_total * k)
        if nt_scan == 1:  # serial kernels are called directly: a parallel launch costs ms on a busy machine
            flags = np.zeros((1, 2), np.int64)
            scan_chunk(self.logp, self.lam, g, THETA, 0, n, rowmax, counts, validate, flags[0])
        else:
            flags = scan_rows(self.logp, self.lam, g, THETA, rowmax, counts, validate, nt_scan)
        flags = flags.sum(axis=0)
        if validate:
            problem = None
            if flags[0]:
                problem = f"log_p contains {int(flags[0])} NaN or +inf values"
            elif flags[1]:
                problem = f"{int(flags[1])} rows of log_p are entirely -inf (a sample with no possible cluster)"
            agree(self.red, problem)
        nnz = int(counts.sum())
        nnz_total = int(self.red.sum_int(np.array([nnz], np.int64))[0])
        density = nnz_total / (self.n_total * k)
        self.rebuilds += 1
        if density > DENSE_FRACTION:
            dense = getattr(self, "_dense_buf", None)
            if dense is None:
                dense = self._dense_buf = np.empty((n, k), np.float32)
            self._fill(g, rowmax, self._no_rows, self._no_rows, self._no_vals, self._no_idx, dense, nt_scan)
            return Kernel(
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
        return Kernel(
            "sparse", rowmax, density, offsets=offsets, vals=vals, idx=idx, dense=self._no_dense, perm=perm, bounds={}
        )

    def _fill(
        self, g: np.ndarray, rowmax: np.ndarray, starts: np.ndarray, ends: np.ndarray, vals: np.ndarray,
        idx: np.ndarray, dense: np.ndarray, nt: int,
    ) -> None:  # fmt: skip
        if nt == 1:
            fill_chunk(self.logp, self.lam, g, THETA, rowmax, 0, self.n_local, starts, ends, vals, idx, dense)
        else:
            fill_rows(self.logp, self.lam, g, THETA, rowmax, starts, ends, vals, idx, dense, nt)

    def step(self, ker: Kernel, v: np.ndarray, beta: np.ndarray, mode: int) -> np.ndarray:
        """One pass over the kernel (``beta`` in stored row order); returns the globally reduced int64 column masses
        and error."""
        work = self.n_total * self.k if ker.storage == "dense" else int(ker.density * self.n_total * self.k)
        nt = 1 if work < SERIAL_WORK else self.chooser.pick()
        t0 = time.perf_counter()
        if nt > 1:
            out = pass_rows(
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
                pass_dense_chunk(ker.dense, *args)
            else:
                pass_sparse_chunk(ker.offsets, ker.vals, ker.idx, *args)
        dt = time.perf_counter() - t0
        if work >= SERIAL_WORK:
            self.chooser.record(nt, dt)
        self.timings["iterate"] += dt
        return self.red.sum_int(out)

    def exact_column_logsum(self, ker: Kernel, beta: np.ndarray, cols: np.ndarray) -> np.ndarray:
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

    def _column_lse(
        self, cols: np.ndarray, shift: np.ndarray, cmax: np.ndarray, nt: int
    ) -> tuple[np.ndarray, np.ndarray]:
        if nt > 1:
            return column_lse(self.logp, self.lam, cols, shift, cmax, self.q_scale, nt)
        out_max = np.full(cols.shape[0], -np.inf)
        out_sum = np.zeros(cols.shape[0], np.int64)
        lse_chunk(self.logp, self.lam, cols, shift, cmax, self.q_scale, 0, self.n_local, out_max, out_sum)
        return out_max, out_sum

    def solve(self, tol: float, max_iter: int, check_every: int, strength: float = 1.0) -> dict[str, Any]:
        """Iterate to the stopping rule. ``strength`` < 1 softens the column constraint into a KL penalty
        (semi-relaxed OT): the column update becomes ``G <- strength * (log r - log A)`` on the absolute dual ``G``
        instead of ``G <- log r - log A`` (``A`` the column mass without the column scaling), so the duals are kept
        in the absolute gauge (``offset``) rather than only up to a constant."""
        k = self.k
        log_r = np.log(self.r)
        g = np.zeros(k)  # log alpha absorbed in the kernel, up to the gauge shift ``offset``
        offset = 0.0  # absolute column dual = g + offset + log v (row duals took the opposite shifts)
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
                balanced = g + logv + log_r - np.log(masses.astype(np.float64) / (self.q_scale * self.n_total))
            if empty.any():
                cols = np.flatnonzero(empty)
                balanced[cols] = log_r[cols] - self.exact_column_logsum(ker, beta, cols)
            # strength 1 keeps SeLaVi's update bit for bit (the absolute form rounds differently)
            logv_new = balanced - g if strength == 1.0 else strength * (balanced + offset) - offset - g
            if logv_new.max() - logv_new.min() > THETA - TAU:
                # absorb v into g (shifted so max g = 0) and rebuild; beta takes the shift and the new row maxima so
                # that the plan beta_i W_ik v_k, and with it the official error, is exactly unchanged
                g = g + logv_new
                shift = g.max()
                g -= shift
                offset += shift
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
            argmax_rows(self.logp, self.lam, log_alpha, labels, nt)
        else:
            argmax_chunk(self.logp, self.lam, log_alpha, 0, self.n_local, labels)
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
