"""Modality alignment: permute the audio head's clusters to match the video head's (selavi-method.md §3.2).

The video and audio heads start random and independent, so cluster k of one means nothing to the
other, and SeLaVi's product p_video * p_audio would multiply unrelated columns. Once, before the
first Sinkhorn-Knopp step, SeLaVi looks for the permutation pi of the audio outputs that minimises
the L1 distance C(pi) = sum_i sum_k |P_v[i,k] - P_a[i,pi(k)]|, then bakes pi into the audio head's
final Linear.

The cost separates over columns, C(pi) = sum_k D[k, pi(k)] with D[k, m] = sum_i |P_v[i,k] - P_a[i,m]|,
so minimising it is a linear assignment problem on the K x K matrix D, solved exactly by
``scipy.optimize.linear_sum_assignment`` (milliseconds at K = 309). The paper searches it instead with
random pair swaps (restarts, a proposal budget, a patience); bench/alignment.py measured that search
against the exact assignment on 60 synthetic cases: never better, worse in 37 (all 24 with K >= 100,
up to 1.6 % above the optimum; a planted permutation recovered 12 times in 20 against 18), so it was
removed with its knobs (docs/experiments.md). D itself is N*K*K absolute differences, computed once
by a cache-blocked numba kernel (rows of N in blocks that stay in L2, one private K x K accumulator
per thread), about a second at N = 200k, K = 309. No full-size copy of P is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numba
import numpy as np
from scipy.optimize import linear_sum_assignment

if TYPE_CHECKING:
    import torch

_BLOCK = 1024  # rows of N per cache block (512-1024 measured equally fast for K = 100-309)


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _pairwise_l1_columns(pv: np.ndarray, pa: np.ndarray, block: int, workers: int) -> np.ndarray:  # pragma: no cover
    """D[k, m] = sum_i |pv[i, k] - pa[i, m]| for (N, K) C-ordered inputs, float64 result.

    Each worker owns every ``workers``-th block of ``block`` rows and a private K x K accumulator.
    A block is first copied, transposed and cast to float32, into two small (K, block) buffers
    (no full-size transposed copy of P is ever made); then four audio columns share each load of
    the video column (register blocking) and the contiguous 1-D slices let LLVM vectorise the
    float32 reduction (~15 G abs-diffs/s on 2 cores). Block sums are added up in float64.
    """
    n, k_v = pv.shape
    k_a = pa.shape[1]
    n_blocks = (n + block - 1) // block
    partial = np.zeros((workers, k_v, k_a), dtype=np.float64)
    for w in numba.prange(workers):
        vt = np.empty((k_v, block), dtype=np.float32)
        at = np.empty((k_a, block), dtype=np.float32)
        for b in range(w, n_blocks, workers):
            lo = b * block
            length = min(n, lo + block) - lo
            for i in range(length):
                for k in range(k_v):
                    vt[k, i] = pv[lo + i, k]
                for m in range(k_a):
                    at[m, i] = pa[lo + i, m]
            for k in range(k_v):
                v = vt[k, :length]
                m = 0
                while m + 4 <= k_a:
                    a0, a1, a2, a3 = at[m, :length], at[m + 1, :length], at[m + 2, :length], at[m + 3, :length]
                    s0 = s1 = s2 = s3 = np.float32(0.0)
                    for i in range(length):
                        x = v[i]
                        s0 += np.abs(x - a0[i])
                        s1 += np.abs(x - a1[i])
                        s2 += np.abs(x - a2[i])
                        s3 += np.abs(x - a3[i])
                    partial[w, k, m] += s0
                    partial[w, k, m + 1] += s1
                    partial[w, k, m + 2] += s2
                    partial[w, k, m + 3] += s3
                    m += 4
                while m < k_a:
                    a0 = at[m, :length]
                    s0 = np.float32(0.0)
                    for i in range(length):
                        s0 += np.abs(v[i] - a0[i])
                    partial[w, k, m] += s0
                    m += 1
    return partial.sum(axis=0)


@numba.njit(parallel=True, cache=True, nogil=True)
def _permuted_l1(pv: np.ndarray, pa: np.ndarray, perm: np.ndarray) -> float:  # pragma: no cover - numba
    """sum_i sum_k |pv[i, k] - pa[i, perm[k]]| in float64, one pass, no temporaries."""
    n, k = pv.shape
    total = 0.0
    for i in numba.prange(n):
        row = 0.0
        for c in range(k):
            row += abs(np.float64(pv[i, c]) - np.float64(pa[i, perm[c]]))
        total += row
    return total


def _as_float_matrix(p: Any, name: str) -> np.ndarray:
    if hasattr(p, "detach"):  # a torch tensor: avoid importing torch here
        p = p.detach().cpu().numpy()
    arr = np.asarray(p)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be an (N, K) matrix of probabilities, got shape {arr.shape}")
    return arr


def _pair(p_video: Any, p_audio: Any) -> tuple[np.ndarray, np.ndarray]:
    pv, pa = _as_float_matrix(p_video, "p_video"), _as_float_matrix(p_audio, "p_audio")
    if pv.shape != pa.shape:
        raise ValueError(f"p_video has shape {pv.shape} but p_audio has {pa.shape}")
    if pv.dtype != np.float32:  # the kernels are compiled for float32 and float64 only
        pv = pv.astype(np.float64, copy=False)
    if pa.dtype != pv.dtype:
        pa = pa.astype(pv.dtype)
    return np.ascontiguousarray(pv), np.ascontiguousarray(pa)


def l1_cost_matrix(p_video: Any, p_audio: Any) -> np.ndarray:
    """The K x K matrix D[k, m] = sum_i |P_v[i,k] - P_a[i,m]| (float32 terms, float64 block sums)."""
    pv, pa = _pair(p_video, p_audio)
    workers = max(1, min(numba.get_num_threads(), -(-pv.shape[0] // _BLOCK)))
    return _pairwise_l1_columns(pv, pa, _BLOCK, workers)


def alignment_cost(p_video: Any, p_audio: Any, perm: np.ndarray) -> float:
    """C(pi) = sum_i sum_k |P_v[i,k] - P_a[i, pi(k)]| exactly, in float64."""
    pv, pa = _pair(p_video, p_audio)
    perm = np.asarray(perm, dtype=np.int64)
    if perm.shape != (pv.shape[1],):
        raise ValueError(f"perm must have {pv.shape[1]} entries, got shape {perm.shape}")
    return float(_permuted_l1(pv, pa, perm))


def align_permutation(p_video: Any, p_audio: Any) -> tuple[np.ndarray, float]:
    """The permutation pi of audio clusters that minimises the L1 distance to the video posteriors, exactly.

    ``perm[k]`` is the old audio cluster that becomes cluster k: ``p_audio[:, perm]`` is the aligned
    matrix, and ``cost`` is C(perm) recomputed exactly in float64. The assignment is optimal for D as
    ``l1_cost_matrix`` computes it (float32 terms within a block of rows), so C(perm) is the minimum up
    to that rounding.
    """
    cost = l1_cost_matrix(p_video, p_audio)
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty(cost.shape[0], dtype=np.int64)
    perm[rows] = cols
    return perm, alignment_cost(p_video, p_audio, perm)


def apply_permutation_to_linear(linear: torch.nn.Linear, perm: Any) -> torch.nn.Linear:
    """Permute the output units of ``linear`` in place so that new output k is old output ``perm[k]``.

    Applied to the audio head's last layer, this makes the network itself emit the aligned audio
    posteriors, so later passes need no bookkeeping (weight rows and bias entries move together).
    """
    import torch

    perm_t = torch.as_tensor(np.asarray(perm), dtype=torch.long, device=linear.weight.device)
    out = linear.weight.shape[0]
    if (
        perm_t.ndim != 1
        or perm_t.numel() != out
        or not torch.equal(torch.sort(perm_t).values, torch.arange(out, device=perm_t.device))
    ):
        raise ValueError(f"perm must be a permutation of 0..{out - 1}")
    with torch.no_grad():
        linear.weight.copy_(linear.weight[perm_t])
        if linear.bias is not None:
            linear.bias.copy_(linear.bias[perm_t])
    return linear
