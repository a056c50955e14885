"""Timings of metrics, modality alignment and ``evaluate_run`` at VGG-Sound scale (N = 200k, K = C = 309).

    .venv/bin/python bench/bench_evaluate.py [--n 200000] [--k 309] [--heads 10] [--skip-run]

Targets (../shared/docs/perf-baselines.md §2, §3): all metrics of one head < 0.5 s without aNMI;
k-means baseline (k = 309, 512-d) < 5 s; alignment must not take minutes. Prints one line per item.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("SELAVI_NO_PROGRESS", "1")


def timed(label: str, fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    print(f"{label:<58} {best:8.3f} s")
    return out


def bench_metrics(n: int, k: int) -> None:
    from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score, normalized_mutual_info_score

    from selavi_core.evaluation import metrics as m

    rng = np.random.default_rng(0)
    y = rng.integers(0, k, n)
    p = np.where(rng.random(n) < 0.5, y, rng.integers(0, k, n))
    print(f"-- metrics, N = {n}, K = C = {k}")
    timed("contingency (np.bincount)", lambda: m.contingency(y, p), 3)
    timed("clustering_scores(adjusted=False)", lambda: m.clustering_scores(y, p, adjusted=False), 3)
    ours = timed("clustering_scores(adjusted=True)", lambda: m.clustering_scores(y, p), 3)
    timed("hungarian_accuracy", lambda: m.hungarian_accuracy(y, p), 3)
    timed("sklearn normalized_mutual_info_score", lambda: normalized_mutual_info_score(y, p))
    timed("sklearn adjusted_rand_score", lambda: adjusted_rand_score(y, p))
    sk = timed("sklearn adjusted_mutual_info_score", lambda: adjusted_mutual_info_score(y, p))
    print(f"   aNMI ours {ours['anmi']:.12f} sklearn {sk:.12f} diff {abs(ours['anmi'] - sk):.1e}")


def _posteriors(rng: np.random.Generator, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    z = rng.integers(0, k, n)
    logits_v = rng.normal(size=(n, k)) + 2.0 * np.eye(k)[z]
    logits_a = rng.normal(size=(n, k)) + 2.0 * np.eye(k)[z][:, rng.permutation(k)]
    out = []
    for logits in (logits_v, logits_a):
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        out.append(e / e.sum(axis=1, keepdims=True))
    return out[0], out[1]


def bench_alignment(sizes: list[tuple[int, int]]) -> None:
    from selavi_core.selflabel.alignment import align_permutation, alignment_cost, l1_cost_matrix

    rng = np.random.default_rng(1)
    timed("numba compile/load of the kernels", lambda: align_permutation(*_posteriors(rng, 64, 4)))
    for n, k in sizes:
        pv, pa = _posteriors(rng, n, k)
        print(f"-- alignment, N = {n}, K = {k}")
        timed("l1_cost_matrix (N K^2 abs-diffs)", lambda pv=pv, pa=pa: l1_cost_matrix(pv, pa))
        _, cost = timed("align_permutation (D + exact assignment)", lambda pv=pv, pa=pa: align_permutation(pv, pa))
        print(f"   identity cost {alignment_cost(pv, pa, np.arange(k)):.1f} -> {cost:.1f}")


def _synthetic_run(root: Path, n: int, k: int, heads: int, dim: int) -> Path:
    from selavi_core.catalog import CATALOG_COLUMNS, catalog_hash
    from selavi_core.runs.run import RunMeta, write_run

    rng = np.random.default_rng(2)
    y = rng.integers(0, k, n)
    ids = [f"c{i:07d}" for i in range(n)]
    cat = root / "catalog"
    cat.mkdir()
    df = pd.DataFrame({c: [None] * n for c in CATALOG_COLUMNS})
    df["clip_id"], df["label"], df["status"] = ids, [f"class{c:03d}" for c in y], "ok"
    df.astype({c: "string" for c in ("path", "split", "video_codec", "error", "source_id")}).to_parquet(
        cat / "clips.parquet"
    )
    joint = np.stack([np.where(rng.random(n) < 0.2 + 0.05 * h, y, rng.integers(0, k, n)) for h in range(heads)], 1)
    centres = rng.normal(size=(k, dim)).astype(np.float32)
    feats = [(centres[y] + rng.normal(size=(n, dim)).astype(np.float32) * s).astype(np.float16) for s in (1.5, 3.0)]
    meta = RunMeta(catalog_dir=str(cat), catalog_hash=catalog_hash(cat), heads=heads, clusters=k, preset="paper")
    write_run(
        root / "run", meta, ids, joint=joint, video=joint, audio=joint,
        confidence=np.ones((n, heads)), margin=np.ones((n, heads)),
        features_video=feats[0], features_audio=feats[1], priors=np.full((heads, k), 1 / k),
    )  # fmt: skip
    return root / "run"


def bench_evaluate(n: int, k: int, heads: int, dim: int) -> None:
    from selavi_core.evaluation.evaluate import evaluate_run

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = timed(
            f"write a synthetic run ({n} clips, {heads} heads, 2 x {dim}-d)",
            lambda: _synthetic_run(Path(tmp), n, k, heads, dim),
        )
        print(f"-- evaluate_run, N = {n}, K = C = {k}, {heads} heads")
        timed(
            "evaluate_run(adjusted=False, baselines=False)",
            lambda: evaluate_run(run_dir, adjusted=False, baselines=False),
        )
        timed("evaluate_run(adjusted=True, baselines=False)", lambda: evaluate_run(run_dir, baselines=False))
        res = timed("evaluate_run(adjusted=True, baselines=True)", lambda: evaluate_run(run_dir))
        for key, value in res["seconds"].items():
            print(f"   seconds[{key}] = {value:.2f}")
        for b in res["baselines"]:
            print(f"   {b['name']:<36} NMI {b['nmi']:.3f}  Acc {b['accuracy']:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--k", type=int, default=309)
    ap.add_argument("--heads", type=int, default=10)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--skip-run", action="store_true", help="skip the evaluate_run part (writes ~400 MB to /tmp)")
    args = ap.parse_args()
    bench_metrics(args.n, args.k)
    bench_alignment([(20_000, 100), (args.n, args.k)])
    if not args.skip_run:
        bench_evaluate(args.n, args.k, args.heads, args.dim)


if __name__ == "__main__":
    main()
