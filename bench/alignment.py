"""Benchmark: the paper's swap-proposal search for the modality alignment against the exact assignment.

    .venv/bin/python bench/alignment.py              # 60 synthetic cases, table and summary
    .venv/bin/python bench/alignment.py --quick      # 12 cases (K <= 30)

The alignment picks the permutation pi of the audio clusters minimising C(pi) = sum_k D[k, pi(k)] with
D[k, m] = sum_i |P_v[i,k] - P_a[i,m]| (selflabel/alignment.py). Both methods get the same D, computed once by
``l1_cost_matrix``, so the times compare the searches alone (the matrix time is shown apart):

* ``search``: SeLaVi's local search as the project ran it before the exact assignment replaced it, kept here verbatim
  as the baseline: ``restarts`` (2) searches from the identity, each proposing uniformly random pair swaps, accepting
  a swap only if the cost drops, stopping after ``max_proposals`` (50,000) proposals or ``patience`` (1,000) in a row
  without an accepted swap; the best search wins.
* ``lsa``: ``scipy.optimize.linear_sum_assignment(D)``, the exact optimum of the same objective.

Cases: K in {4, 10, 30, 100, 309} x N in {2,000, 20,000} x three kinds of posterior pair x 2 seeds:
``planted``: both modalities see the same hidden clusters (logit signal 3 on the true cluster plus unit noise) and
the audio columns are shuffled; ``weak``: the same with signal 0.5 (barely above the noise, like heads shortly after
initialisation); ``random``: two independent random posteriors (no structure at all: many near-ties, the hardest
landscape for a local search). "equal" means the two costs agree to 1e-9 relative (floating-point sums of the same
D entries in another order); "worse"/"better" is the search's cost against the assignment's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numba  # noqa: E402
import numpy as np  # noqa: E402
from scipy.optimize import linear_sum_assignment  # noqa: E402

from selavi_core.selflabel.alignment import l1_cost_matrix  # noqa: E402

MAX_PROPOSALS, PATIENCE, RESTARTS = 50_000, 1_000, 2  # the paper defaults the project shipped (ScheduleSpec)
REL_EQUAL = 1e-9


@numba.njit(cache=False, nogil=True)
def _swap_search(cost: np.ndarray, firsts: np.ndarray, seconds: np.ndarray, patience: int):  # pragma: no cover
    """Greedy pair-swap local search from the identity over the proposal list (first[j], second[j])."""
    k = cost.shape[0]
    perm = np.arange(k)
    total = 0.0
    for c in range(k):
        total += cost[c, c]
    since = 0
    for j in range(firsts.shape[0]):
        p, q = firsts[j], seconds[j]
        delta = cost[p, perm[q]] + cost[q, perm[p]] - cost[p, perm[p]] - cost[q, perm[q]]
        if delta < 0.0:
            tmp = perm[p]
            perm[p] = perm[q]
            perm[q] = tmp
            total += delta
            since = 0
        else:
            since += 1
            if since >= patience:
                break
    return perm, total


def paper_search(cost: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The removed ``align_permutation`` search: best of RESTARTS random-swap local searches (ties keep the first)."""
    k = cost.shape[0]
    best_perm, best_cost = np.arange(k), float(np.trace(cost))
    for _ in range(RESTARTS):
        if k < 2:
            break
        first = rng.integers(0, k, size=MAX_PROPOSALS)
        second = rng.integers(0, k - 1, size=MAX_PROPOSALS)
        second += second >= first
        perm, total = _swap_search(cost, first.astype(np.int64), second.astype(np.int64), PATIENCE)
        if total < best_cost:
            best_perm, best_cost = perm.copy(), float(total)
    return best_perm


def exact_assignment(cost: np.ndarray) -> np.ndarray:
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty(cost.shape[0], np.int64)
    perm[rows] = cols
    return perm


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def posteriors(kind: str, n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(p_video, p_audio, the planted permutation or None): ``p_audio[:, planted]`` is aligned with ``p_video``."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        return _softmax(rng.normal(size=(n, k))), _softmax(rng.normal(size=(n, k))), None
    signal = {"planted": 3.0, "weak": 0.5}[kind]
    onehot = np.eye(k)[rng.integers(0, k, n)]
    p_video = _softmax(signal * onehot + rng.normal(size=(n, k)))
    shuffle = rng.permutation(k)
    p_audio = _softmax(signal * onehot + rng.normal(size=(n, k)))[:, shuffle]
    return p_video, p_audio, np.argsort(shuffle)


def _timed(fn, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="12 cases with K <= 30")
    parser.add_argument("--repeat", type=int, default=3, help="timing repeats per method (best is kept)")
    args = parser.parse_args()
    ks = [4, 10, 30] if args.quick else [4, 10, 30, 100, 309]
    ns = [2_000] if args.quick else [2_000, 20_000]
    seeds = [0, 1]
    kinds = ["planted", "weak", "random"]
    if args.quick:
        kinds, seeds = ["planted", "random"], [0]
    # compile outside the timings
    warm = l1_cost_matrix(*posteriors("random", 64, 4, 0)[:2])
    paper_search(warm, np.random.default_rng(0))
    exact_assignment(warm)

    header = f"{'K':>4} {'N':>6} {'kind':>8} {'seed':>4} | {'identity':>12} {'search':>12} {'lsa':>12} | " \
             f"{'gap %':>8} {'verdict':>7} | {'D s':>7} {'search s':>9} {'lsa s':>8} {'ratio':>7}"  # fmt: skip
    print(header)
    print("-" * len(header))
    rows = []
    for k in ks:
        for n in ns:
            for kind in kinds:
                for seed in seeds:
                    pv, pa, planted = posteriors(kind, n, k, 1000 * k + 10 * seed + kinds.index(kind))
                    cost, t_matrix = _timed(lambda pv=pv, pa=pa: l1_cost_matrix(pv, pa), 1)
                    perm_s, t_s = _timed(lambda c=cost, s=seed: paper_search(c, np.random.default_rng(s)), args.repeat)
                    perm_l, t_l = _timed(lambda c=cost: exact_assignment(c), args.repeat)
                    c_id = float(np.trace(cost))
                    c_s = float(cost[np.arange(k), perm_s].sum())
                    c_l = float(cost[np.arange(k), perm_l].sum())
                    gap = (c_s - c_l) / c_l
                    verdict = "equal" if abs(gap) <= REL_EQUAL else ("worse" if gap > 0 else "better")
                    found = (
                        None
                        if planted is None
                        else (bool(np.array_equal(perm_s, planted)), bool(np.array_equal(perm_l, planted)))
                    )
                    rows.append({"k": k, "kind": kind, "verdict": verdict, "gap": gap, "t_s": t_s, "t_l": t_l,
                                 "t_d": t_matrix, "found": found})  # fmt: skip
                    print(
                        f"{k:>4} {n:>6} {kind:>8} {seed:>4} | {c_id:>12.1f} {c_s:>12.1f} {c_l:>12.1f} | "
                        f"{100 * gap:>8.3f} {verdict:>7} | {t_matrix:>7.3f} {t_s:>9.5f} {t_l:>8.5f} {t_s / t_l:>7.1f}"
                    )
    print()
    verdicts = [r["verdict"] for r in rows]
    print(
        f"{len(rows)} cases: search worse than LSA in {verdicts.count('worse')}, equal in {verdicts.count('equal')}, "
        f"better in {verdicts.count('better')}"
    )
    for kind in kinds:
        sub = [r for r in rows if r["kind"] == kind]
        worse = [r for r in sub if r["verdict"] == "worse"]
        print(
            f"  {kind:>8}: worse {len(worse)}/{len(sub)}, largest gap {100 * max(r['gap'] for r in sub):.3f} %, "
            f"median gap {100 * statistics.median(r['gap'] for r in sub):.4f} %"
        )
    for k in ks:
        sub = [r for r in rows if r["k"] == k]
        print(
            f"  K = {k:>3}: worse {sum(r['verdict'] == 'worse' for r in sub)}/{len(sub)}, "
            f"median time search / LSA {statistics.median(r['t_s'] / r['t_l'] for r in sub):.1f}x "
            f"({1e3 * statistics.median(r['t_s'] for r in sub):.2f} ms vs {1e3 * statistics.median(r['t_l'] for r in sub):.2f} ms)"
        )
    for kind in kinds[:2]:
        sub = [r["found"] for r in rows if r["kind"] == kind]
        print(f"  planted permutation recovered ({kind}): search {sum(f[0] for f in sub)}/{len(sub)}, "
              f"LSA {sum(f[1] for f in sub)}/{len(sub)}")  # fmt: skip
    share = [max(r["t_s"], r["t_l"]) / r["t_d"] for r in rows if r["k"] >= 100]
    print(f"  K >= 100: the slower of the two takes at most {100 * max(share):.0f} % of the time of D itself")
    ratios = [r["t_s"] / r["t_l"] for r in rows]
    print(f"time search / LSA over all cases: median {statistics.median(ratios):.1f}x, "
          f"min {min(ratios):.1f}x, max {max(ratios):.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
