"""Benchmark: Sinkhorn-Knopp pseudo-labelling at VGG-Sound scale against POT, with label checks.

    .venv/bin/python bench/sinkhorn.py                      # 10 heads of 200,000 x 309, lam 20, SeLaVi's stopping rule
    .venv/bin/python bench/sinkhorn.py --n 20000 --k 32     # smaller sizes
    .venv/bin/python bench/sinkhorn.py --scale 10 --prior gauss   # sharper posteriors, Gaussian prior

Inputs are perf-baselines §1.1: per head ``log_softmax(scale * randn(N, K))`` in float32 (built before timing).
Our solver runs to the official rule (tol 0.1 every 10 iterations, cap 2000). POT's ``ot.sinkhorn`` gets the same
float32 input, ``reg = 1/lam``, ``a = 1/N``, ``b = marginal``, and exactly our iteration count
(``numItermax = n_iter, stopThr = 0``); it is timed on the first ``--pot-heads`` heads in the same process, and the
ratio compares the same heads. POT's cost matrix is ``M = -(log_p - rowmax)``: a per-row constant that leaves the
transport problem unchanged, without which POT's float32 kernel ``exp(lam * log_p)`` underflows to zero rows and
stops at its first iteration. Label agreement is measured (a) against POT's plan on all rows of the POT heads and
(b) against the float64 log-domain reference (``sinkhorn_reference``) on a row subsample of head 0, both solvers run
on that subsample to their own convergence. The machine is shared, so compare ratios from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from selavi_core.selflabel.priors import parse_prior  # noqa: E402
from selavi_core.selflabel.sinkhorn import sinkhorn_knopp, sinkhorn_reference  # noqa: E402


def make_log_p(n: int, k: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    """float32 log_softmax(scale * randn(n, k)), built in row chunks to keep memory at one output array."""
    out = np.empty((n, k), np.float32)
    for lo in range(0, n, 16384):
        z = scale * rng.standard_normal((min(n, lo + 16384) - lo, k), dtype=np.float32)
        z -= z.max(axis=1, keepdims=True)
        z -= np.log(np.exp(z).sum(axis=1, keepdims=True))
        out[lo : lo + len(z)] = z
    return out


def run_pot(log_p: np.ndarray, marginal: np.ndarray, lam: float, n_iter: int) -> tuple[float, np.ndarray, bool]:
    import ot

    t0 = time.perf_counter()
    m = -(log_p - log_p.max(axis=1, keepdims=True))  # float32; row shifts do not change the OT problem
    a = np.full(log_p.shape[0], 1.0 / log_p.shape[0], np.float32)
    b = marginal.astype(np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = ot.sinkhorn(a, b, m, 1.0 / lam, numItermax=n_iter, stopThr=0.0, warn=False)
    seconds = time.perf_counter() - t0
    numerical = any("numerical errors" in str(w.message) for w in caught)
    return seconds, plan.argmax(axis=1), not numerical


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000, help="rows (samples) per head")
    ap.add_argument("--k", type=int, default=309, help="clusters")
    ap.add_argument("--heads", type=int, default=10)
    ap.add_argument(
        "--scale", type=float, default=3.0, help="logit scale s of log_softmax(s * randn): sharper when larger"
    )
    ap.add_argument("--lam", type=float, default=20.0)
    ap.add_argument("--tol", type=float, default=0.1)
    ap.add_argument("--max-iter", type=int, default=2000)
    ap.add_argument("--prior", default="uniform", help="uniform | gauss | gauss-reciprocal | zipf:S | PATH")
    ap.add_argument("--pot-heads", type=int, default=2, help="heads also solved with POT (0: skip POT)")
    ap.add_argument("--ref-rows", type=int, default=4000, help="row subsample for the float64 reference (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    prior = parse_prior(args.prior)
    bases = prior.draw(args.k, args.heads, rng)
    rows = []
    pot_rows = []
    print(
        f"Sinkhorn bench: {args.heads} heads of {args.n} x {args.k}, scale {args.scale}, lam {args.lam}, "
        f"prior {args.prior}, tol {args.tol}, cap {args.max_iter}",
        flush=True,
    )
    print(
        f"{'head':>4} {'s':>7} {'iters':>5} {'ms/it':>6} {'storage':>7} {'dens':>6} {'rebld':>5} {'err':>7} "
        f"{'min/max count':>14}  POT",
        flush=True,
    )
    # numba compiles on first use (or loads its on-disk cache): do that on a small problem, timed apart. 60,000 rows
    # is enough to reach the parallel kernels at K=309.
    warm_n = min(args.n, 60_000)
    warm_input = make_log_p(warm_n, args.k, args.scale, np.random.default_rng(12345))
    t0 = time.perf_counter()
    sinkhorn_knopp(warm_input, lam=args.lam, max_iter=20)
    warm = time.perf_counter() - t0
    del warm_input
    print(f"warm-up (numba compile or cache load, {warm_n} rows, not counted): {warm:.2f} s", flush=True)
    ref_log_p = None
    for h in range(args.heads):
        log_p = make_log_p(args.n, args.k, args.scale, rng)
        if h == 0 and args.ref_rows:
            ref_log_p = log_p[rng.choice(args.n, size=min(args.ref_rows, args.n), replace=False)].copy()
        mass = np.exp(log_p[:: max(1, args.n // 20000)].astype(np.float64)).sum(axis=0)
        marginal = prior.marginal(bases[h], mass)
        res = sinkhorn_knopp(log_p, marginal, lam=args.lam, tol=args.tol, max_iter=args.max_iter)
        expected = marginal * args.n
        row = {
            "head": h,
            "seconds": res.seconds,
            "n_iter": res.n_iter,
            "error": res.error,
            "storage": res.storage,
            "density": res.density,
            "rebuilds": res.rebuilds,
            "repairs": res.repairs,
            "converged": res.converged,
            "count_ratio_min": float((res.counts / expected).min()),
            "count_ratio_max": float((res.counts / expected).max()),
            "timings": res.timings,
        }
        pot_txt = ""
        if h < args.pot_heads:
            pot_s, pot_labels, pot_ok = run_pot(log_p, marginal, args.lam, res.n_iter)
            agree = float((pot_labels == res.labels).mean())
            pot_rows.append(
                {"head": h, "pot_seconds": pot_s, "ours_seconds": res.seconds, "agree": agree, "ran_all": pot_ok}
            )
            pot_txt = f"{pot_s:.2f} s ({pot_s / res.seconds:.1f}x ours), label agreement {agree:.5f}" + (
                "" if pot_ok else " [POT stopped early: numerical errors]"
            )
        rows.append(row)
        print(
            f"{h:>4} {res.seconds:7.3f} {res.n_iter:>5} {1000 * res.seconds / res.n_iter:6.2f} {res.storage:>7} "
            f"{res.density:6.4f} {res.rebuilds:>5} {res.error:7.4f} {row['count_ratio_min']:6.3f}/{row['count_ratio_max']:.3f}  {pot_txt}",
            flush=True,
        )
        del log_p

    secs = [r["seconds"] for r in rows]
    phases = {name: statistics.median(r["timings"][name] for r in rows) for name in rows[0]["timings"]}
    print("median seconds per head by phase: " + ", ".join(f"{name} {sec:.3f}" for name, sec in phases.items()))
    summary = {
        "n": args.n,
        "k": args.k,
        "heads": args.heads,
        "scale": args.scale,
        "lam": args.lam,
        "prior": args.prior,
        "total_seconds": sum(secs),
        "median_seconds_per_head": statistics.median(secs),
        "first_head_seconds": secs[0],
        "warmup_seconds": warm,
        "median_phase_seconds": phases,
        "iterations": [r["n_iter"] for r in rows],
    }
    print(
        f"\ntotal {summary['total_seconds']:.2f} s for {args.heads} heads; median {summary['median_seconds_per_head']:.3f} s/head "
        f"(first head {secs[0]:.3f} s); iterations {summary['iterations']}"
    )
    if pot_rows:
        pot_total = sum(p["pot_seconds"] for p in pot_rows)
        ours_total = sum(p["ours_seconds"] for p in pot_rows)
        summary["pot"] = {
            "heads": len(pot_rows),
            "pot_seconds": pot_total,
            "ours_seconds": ours_total,
            "ratio": pot_total / ours_total,
            "rows": pot_rows,
        }
        print(
            f"POT ot.sinkhorn on the same {len(pot_rows)} head(s), same iterations: {pot_total:.2f} s vs ours {ours_total:.2f} s "
            f"-> ours is {pot_total / ours_total:.1f}x faster (per head: "
            + ", ".join(f"{p['pot_seconds'] / p['ours_seconds']:.1f}x" for p in pot_rows)
            + f"); POT label agreement {min(p['agree'] for p in pot_rows):.5f}"
        )
    if ref_log_p is not None:
        marginal = prior.marginal(bases[0], np.exp(ref_log_p.astype(np.float64)).sum(axis=0))
        ours = sinkhorn_knopp(ref_log_p, marginal, lam=args.lam, tol=args.tol, max_iter=args.max_iter)
        ref = sinkhorn_reference(ref_log_p, marginal, lam=args.lam, tol=args.tol, max_iter=args.max_iter)
        agree = float((ours.labels == ref.labels).mean())
        summary["reference"] = {
            "rows": len(ref_log_p),
            "agree": agree,
            "ours_iters": ours.n_iter,
            "ref_iters": ref.n_iter,
            "ours_error": ours.error,
            "ref_error": ref.error,
            "ref_seconds": ref.seconds,
            "ours_seconds": ours.seconds,
        }
        print(
            f"float64 log-domain reference on a {len(ref_log_p)}-row subsample of head 0: label agreement {agree:.5f}; "
            f"iterations ours {ours.n_iter} / ref {ref.n_iter}; err ours {ours.error:.5f} / ref {ref.error:.5f}; "
            f"{ref.seconds:.1f} s vs {ours.seconds:.3f} s"
        )
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "heads": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
