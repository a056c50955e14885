"""Modality alignment: permute the audio head's clusters to match the video head's (selavi-method.md §3.2).

The video and audio heads start random and independent, so cluster k of one means nothing to the
other, and SeLaVi's product p_video * p_audio would multiply unrelated columns. Once, before the
first Sinkhorn-Knopp step, SeLaVi searches for the permutation pi of the audio outputs that minimises
the L1 distance C(pi) = sum_i sum_k |P_v[i,k] - P_a[i,pi(k)]| with a local search of random pair swaps,
then bakes pi into the audio head's final Linear.

Why this is fast: the cost separates over columns, C(pi) = sum_k D[k, pi(k)] with
D[k, m] = sum_i |P_v[i,k] - P_a[i,m]|, so swapping two columns changes the cost by four entries of D
and a proposal is O(1) once D is known. D itself is N*K*K absolute differences, computed once by a
cache-blocked numba kernel (rows of N in blocks that stay in L2, one private K x K accumulator per
thread), about a second at N = 200k, K = 309; the search then costs milliseconds, so the restarts
are almost free. No full-size copy of P is made.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numba
import numpy as np

from selavi_core.config import ScheduleSpec

if TYPE_CHECKING:
    import torch

_SCHEDULE = ScheduleSpec()
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


@numba.njit(cache=True, nogil=True)
def _swap_search(
    cost: np.ndarray, firsts: np.ndarray, seconds: np.ndarray, patience: int, trace: np.ndarray
) -> tuple[np.ndarray, float, int, int]:  # pragma: no cover - numba
    """Greedy pair-swap local search from the identity over the proposal list (first[j], second[j]).

    Returns (perm, cost, proposals used, swaps accepted); ``trace[a]`` receives the cost after the
    a-th accepted swap.
    """
    k = cost.shape[0]
    perm = np.arange(k)
    total = 0.0
    for c in range(k):
        total += cost[c, c]
    since = 0
    accepted = 0
    used = 0
    for j in range(firsts.shape[0]):
        used += 1
        p, q = firsts[j], seconds[j]
        delta = cost[p, perm[q]] + cost[q, perm[p]] - cost[p, perm[p]] - cost[q, perm[q]]
        if delta < 0.0:
            tmp = perm[p]
            perm[p] = perm[q]
            perm[q] = tmp
            total += delta
            trace[accepted] = total
            accepted += 1
            since = 0
        else:
            since += 1
            if since >= patience:
                break
    return perm, total, used, accepted


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


def _random_pairs(rng: np.random.Generator, k: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` uniformly random unordered pairs of distinct columns."""
    first = rng.integers(0, k, size=count)
    second = rng.integers(0, k - 1, size=count)
    second += second >= first
    return first.astype(np.int64), second.astype(np.int64)


def align_permutation(
    p_video: Any,
    p_audio: Any,
    *,
    max_proposals: int = _SCHEDULE.align_proposals,
    patience: int = _SCHEDULE.align_patience,
    restarts: int = _SCHEDULE.align_restarts,
    rng: np.random.Generator | int | None = None,
    return_info: bool = False,
) -> tuple[np.ndarray, float] | tuple[np.ndarray, float, dict[str, Any]]:
    """The permutation pi of audio clusters that (locally) minimises the L1 distance to the video posteriors.

    SeLaVi's search: ``restarts`` independent local searches, each from the identity, proposing random
    pair swaps (accepted only if the cost drops), stopping after ``max_proposals`` proposals or
    ``patience`` proposals in a row without an accepted swap; the best permutation wins (ties keep the
    earlier search). ``perm[k]`` is the old audio cluster that becomes cluster k:
    ``p_audio[:, perm]`` is the aligned matrix, and ``cost`` is C(perm) recomputed exactly.

    With ``return_info`` a third value reports, per search: proposals used, swaps accepted, final cost
    and the cost after every accepted swap (``traces``), plus the identity's cost and timings.
    """
    if restarts < 1 or max_proposals < 0 or patience < 1:
        raise ValueError("need restarts >= 1, max_proposals >= 0 and patience >= 1")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    t0 = time.perf_counter()
    cost = l1_cost_matrix(p_video, p_audio)
    t_matrix = time.perf_counter() - t0
    k = cost.shape[0]
    best_perm, best_cost = np.arange(k), float(np.trace(cost))
    searches = []
    for _ in range(restarts):
        if k < 2 or max_proposals == 0:
            break
        first, second = _random_pairs(rng, k, max_proposals)
        trace = np.empty(max_proposals, dtype=np.float64)
        perm, total, used, accepted = _swap_search(cost, first, second, patience, trace)
        searches.append(
            {"proposals": int(used), "accepted": int(accepted), "cost": float(total), "trace": trace[:accepted]}
        )
        if total < best_cost:
            best_perm, best_cost = perm.copy(), float(total)
    exact = alignment_cost(p_video, p_audio, best_perm)
    if not return_info:
        return best_perm, exact
    info = {
        "identity_cost": alignment_cost(p_video, p_audio, np.arange(k)),
        "searches": searches,
        "traces": [s["trace"] for s in searches],
        "matrix_seconds": t_matrix,
        "seconds": time.perf_counter() - t0,
    }
    return best_perm, exact, info


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
