"""numba kernels of the Sinkhorn solver (``solver.py``): scan, fill, pass, argmax and exact column sums.

Each is a serial ``*_chunk`` function over a row range, called directly for small problems and by a parallel driver
(once per thread) for large ones; a plain loop compiles ~3x tighter than a prange body.

Determinism: kernels are compiled WITHOUT fast-math, so every per-row value is fixed by IEEE rules (no FMA contraction,
no reassociation), whatever LLVM inlines or vectorises; the only flagged operation is the row maximum, which is exact
in any order. Cross-row sums are int64. Results are therefore bit-identical for any thread count, row order or
sharding, which is what lets the distributed solver reproduce the single-process labels exactly.

Importing this module picks numba's threading layer (workqueue) before the first parallel launch.
"""

from __future__ import annotations

import os

os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")  # the default omp layer stalls ~20 ms per region here

import numba as nb  # noqa: E402
import numpy as np  # noqa: E402
from llvmlite import ir as llvm_ir  # noqa: E402
from numba import types  # noqa: E402
from numba.core import cgutils  # noqa: E402
from numba.extending import intrinsic  # noqa: E402

# numba imported earlier (e.g. by umap): still choose before first launch. (numba.config sets its options into its
# globals() from the environment at import, so its types know none of them: hence the attr-defined ignores.)
if nb.config.THREADING_LAYER == "default":  # type: ignore[attr-defined]
    from numba.np.ufunc import parallel as _nb_parallel

    if not getattr(_nb_parallel, "_is_initialized", True):
        nb.config.THREADING_LAYER = "workqueue"  # type: ignore[attr-defined]


def num_threads() -> int:
    """Threads a parallel kernel may use (``numba.set_num_threads`` changes it)."""
    return nb.get_num_threads()


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
def scan_chunk(logp, lam, g, theta, lo, hi, rowmax, counts, validate, flags):  # pragma: no cover - compiled
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
def scan_rows(logp, lam, g, theta, rowmax, counts, validate, nt):  # pragma: no cover - compiled
    """Row maxima of ``lam*logp + g`` and how many entries lie within ``theta`` of them; counts bad values."""
    n_rows = logp.shape[0]
    flags = np.zeros((nt, 2), np.int64)  # [NaN or +inf entries, rows without any finite entry]
    chunk = (n_rows + nt - 1) // nt
    for t in nb.prange(nt):
        lo = min(n_rows, t * chunk)
        scan_chunk(logp, lam, g, theta, lo, min(n_rows, lo + chunk), rowmax, counts, validate, flags[t])
    return flags


@nb.njit(cache=True)
def fill_chunk(logp, lam, g, theta, rowmax, lo, hi, starts, ends, vals, idx, dense):  # pragma: no cover - compiled
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
def fill_rows(logp, lam, g, theta, rowmax, starts, ends, vals, idx, dense, nt):  # pragma: no cover - compiled
    """Kernel entries ``exp(lam*logp + g - rowmax)`` kept by ``scan_rows``: row i's into ``vals/idx[starts_i:ends_i]``
    (CSR) or, when ``dense`` has rows, into that float32 buffer with exact zeros below ``theta`` (never subnormal)."""
    n_rows = logp.shape[0]
    chunk = (n_rows + nt - 1) // nt
    for t in nb.prange(nt):
        lo = min(n_rows, t * chunk)
        hi = min(n_rows, lo + chunk)
        fill_chunk(
            logp, lam, g, theta, rowmax, lo, hi, starts, ends, vals, idx, dense[lo:hi] if dense.shape[0] else dense
        )


@nb.njit(cache=True)
def pass_sparse_chunk(offsets, vals, idx, v, beta, c, scale, mode, err_scale, err_cap, lo, hi, acc):  # pragma: no cover
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
def pass_dense_chunk(w, v, beta, c, scale, mode, err_scale, err_cap, lo, hi, acc):  # pragma: no cover - compiled
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
def pass_rows(offsets, vals, idx, dense, bounds, v, beta, c, scale, mode, err_scale, err_cap):  # pragma: no cover
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
            pass_dense_chunk(dense, v, beta, c, scale, mode, err_scale, err_cap, bounds[t], bounds[t + 1], acc[t])
        else:
            pass_sparse_chunk(
                offsets, vals, idx, v, beta, c, scale, mode, err_scale, err_cap, bounds[t], bounds[t + 1], acc[t]
            )
    return acc.sum(axis=0)


@nb.njit(cache=True)
def argmax_chunk(logp, lam, g, lo, hi, labels):  # pragma: no cover - compiled
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
def argmax_rows(logp, lam, g, labels, nt):  # pragma: no cover - compiled
    """``labels_i = argmax_k(lam*logp_ik + g_k)`` (first maximum on ties, like numpy)."""
    n_rows = logp.shape[0]
    chunk = (n_rows + nt - 1) // nt
    for t in nb.prange(nt):
        lo = min(n_rows, t * chunk)
        argmax_chunk(logp, lam, g, lo, min(n_rows, lo + chunk), labels)


@nb.njit(cache=True)
def lse_chunk(logp, lam, cols, shift, cmax, scale, lo, hi, out_max, out_sum):  # pragma: no cover - compiled
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
def column_lse(logp, lam, cols, shift, cmax, scale, nt):  # pragma: no cover - compiled
    """Over the local rows, per selected column: without ``cmax``, the max of ``shift_i + lam*logp_ik``; with it,
    ``sum_i exp(shift_i + lam*logp_ik - cmax_k)`` in int64 fixed point (``scale`` per unit term)."""
    n_rows = logp.shape[0]
    nc = cols.shape[0]
    part_max = np.full((nt, nc), -np.inf)
    part_sum = np.zeros((nt, nc), np.int64)
    chunk = (n_rows + nt - 1) // nt
    for t in nb.prange(nt):
        lo = min(n_rows, t * chunk)
        lse_chunk(logp, lam, cols, shift, cmax, scale, lo, min(n_rows, lo + chunk), part_max[t], part_sum[t])
    out_max = np.full(nc, -np.inf)
    for t in range(nt):
        for j in range(nc):
            out_max[j] = max(out_max[j], part_max[t, j])
    return out_max, part_sum.sum(axis=0)
