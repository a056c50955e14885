"""The Studio at VGG-Sound scale: 200,000 clips x 10 heads x K=309 with 512-d features per modality.

1. Synthesises a run folder with ``selavi_core.runs.run.write_run`` and a matching catalog parquet; media
   are a few real H.264/AAC previews (``tests/media_factory`` + ``selavi_core.media.preview``) that
   every clip's entry in ``previews/index.parquet`` reuses.
2. In a fresh child process (the "server"), renders pages with Streamlit's AppTest, which runs the
   real entry script and page scripts as the server would: the Clusters page for the largest
   clusters (a different cluster each render: new poster grid, new index lookups) and the Compare
   page (a different head B each render: a new 309 x 309 contingency table), after one cold render
   each. Reports median and 95th percentile render time and the child's peak RSS.

    .venv/bin/python bench/app_scale.py [--out DIR] [--clips 200000] [--renders 20] [--map]

Targets (issue 4): Clusters p95 < 1 s, Compare p95 < 2 s, peak memory < 3 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def synthesise(out: Path, n: int, heads: int, k: int, dim: int, seed: int = 0) -> Path:
    """Write out/catalog (+ previews) and out/run; return the run folder. Reused when already there."""
    from studio_fixtures import build_previews, catalog_frame

    from selavi_core.runs.run import RunMeta, write_run

    run_dir, catalog_dir = out / "run", out / "catalog"
    if (run_dir / "run.json").is_file() and json.loads((run_dir / "run.json").read_text())["n_clips"] == n:
        return run_dir
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    # real media: 6 short clips, previews built the way `selavi previews` builds them
    from media_factory import make_video

    sources = [make_video(out / "media" / f"src{j}.mp4", duration=1.5, seed=j, noise=3.0) for j in range(6)]
    small = catalog_frame(len(sources), [str(s) for s in sources], ["x"] * len(sources))
    catalog_dir.mkdir(parents=True, exist_ok=True)
    prev = build_previews(catalog_dir, small)

    # ground truth: 309 classes with Gaussian-ish sizes; each head a noisy, permuted copy of it
    weights = np.abs(1 + 0.3 * rng.standard_normal(k))
    gt = rng.choice(k, size=n, p=weights / weights.sum()).astype(np.int32)
    joint = np.empty((n, heads), dtype=np.int32)
    for h in range(heads):
        perm = rng.permutation(k)
        noisy = rng.random(n) < 0.35 + 0.02 * h
        joint[:, h] = np.where(noisy, rng.integers(0, k, n), perm[gt])
    video, audio = joint.copy(), joint.copy()
    flip_v, flip_a = rng.random((n, heads)) < 0.2, rng.random((n, heads)) < 0.3
    video[flip_v] = rng.integers(0, k, int(flip_v.sum()))
    audio[flip_a] = rng.integers(0, k, int(flip_a.sum()))
    confidence = rng.beta(2, 2, size=(n, heads)).astype(np.float32)
    margin = (confidence * rng.random((n, heads))).astype(np.float32)
    centres = rng.standard_normal((k, dim)).astype(np.float32)
    fv = np.empty((n, dim), dtype=np.float16)
    fa = np.empty((n, dim), dtype=np.float16)
    for s in range(0, n, 20_000):
        e = min(s + 20_000, n)
        fv[s:e] = centres[gt[s:e]] + 1.5 * rng.standard_normal((e - s, dim), dtype=np.float32)
        fa[s:e] = centres[(gt[s:e] + 7) % k] + 2.0 * rng.standard_normal((e - s, dim), dtype=np.float32)
    priors = np.abs(1 + 0.1 * rng.standard_normal((heads, k)))
    priors /= priors.sum(axis=1, keepdims=True)

    labels = [f"class_{c:03d}" for c in gt]
    src_of = np.arange(n) % len(sources)
    cat = catalog_frame(n, [str(sources[j]) for j in src_of], labels)
    cat.to_parquet(catalog_dir / "clips.parquet", index=False)
    index = pd.DataFrame({"clip_id": cat["clip_id"], "mp4": prev["mp4"].to_numpy()[src_of],
                          "poster": prev["poster"].to_numpy()[src_of], "error": None})  # fmt: skip
    index.to_parquet(catalog_dir / "previews" / "index.parquet", index=False)
    meta = RunMeta(catalog_dir=str(catalog_dir), catalog_hash="synthetic", heads=heads, clusters=k, preset="paper",
                   prior="gauss", source="synthetic")  # fmt: skip
    write_run(run_dir, meta, cat["clip_id"].to_numpy(), joint=joint, video=video, audio=audio, confidence=confidence,
              margin=margin, features_video=fv, features_audio=fa, priors=priors)  # fmt: skip
    print(f"synthesised {n:,} clips x {heads} heads x K={k} in {time.perf_counter() - t0:.1f} s -> {run_dir}")
    return run_dir


def _stats(times: list[float]) -> dict[str, float]:
    a = np.asarray(times)
    return {"median_s": float(np.median(a)), "p95_s": float(np.percentile(a, 95)), "max_s": float(a.max()), "n": len(a)}


def measure(run_dir: Path, renders: int, with_map: bool) -> dict:
    """Runs in the child process: cold and warm render times per page, and this process's peak RSS."""
    os.environ["SELAVI_RUNS"] = str(run_dir)
    os.environ["SELAVI_NO_PROGRESS"] = "1"
    os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
    from streamlit.testing.v1 import AppTest

    entry = str(ROOT / "app" / "Home.py")
    name = run_dir.name
    out: dict = {}
    t0 = time.perf_counter()
    at = AppTest.from_file(entry, default_timeout=600)
    at.query_params.update({"run": name, "head": "0"})
    at.run()
    out["overview_cold_s"] = time.perf_counter() - t0
    assert not at.exception, [e.value for e in at.exception]
    sizes = np.bincount(np.load(run_dir / "assignments" / "joint.npy", mmap_mode="r")[:, 0])
    largest = np.argsort(-sizes)[: max(renders, 1)]

    def render(page: str, **params: str) -> float:
        at.query_params.clear()
        at.query_params.update({"run": name, "head": "0", **params})
        at.switch_page(f"views/{page}.py")
        t = time.perf_counter()
        at.run()
        dt = time.perf_counter() - t
        assert not at.exception, [e.value for e in at.exception]
        title = {"clusters": "Clusters of head 0", "compare": "Compare heads", "map": "Map", "similar": "Similar clips"}
        assert at.title[0].value == title[page], at.title  # the page itself rendered, not only the entry script
        if page == "clusters":
            assert at.subheader[0].value == f"Cluster {params['cluster']}"
            assert sum(b.label.startswith("▶") for b in at.button) == 24  # a full page of posters
        return dt

    out["clusters_cold_s"] = render("clusters", cluster=str(largest[0]))
    out["clusters_largest_size"] = int(sizes[largest[0]])
    out["clusters"] = _stats([render("clusters", cluster=str(c)) for c in np.resize(largest, renders)])
    out["compare_cold_s"] = render("compare", cluster=str(largest[0]), head_b="1")
    heads_b = [str(1 + i % 9) for i in range(renders)]
    out["compare"] = _stats([render("compare", cluster=str(largest[i % len(largest)]), head_b=b)
                             for i, b in enumerate(heads_b)])  # fmt: skip
    if with_map:
        out["map_first_s"] = render("map")
        out["map_cached"] = _stats([render("map") for _ in range(3)])
        out["similar_first_s"] = render("similar", clip="c000123")
        out["similar"] = _stats([render("similar", clip=f"c{i * 997:06d}") for i in range(3)])
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help="folder for the synthetic run (default: a temp folder)")
    ap.add_argument("--clips", type=int, default=200_000)
    ap.add_argument("--heads", type=int, default=10)
    ap.add_argument("--clusters", type=int, default=309)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--renders", type=int, default=20)
    ap.add_argument("--map", action="store_true", help="also time the Map (UMAP, minutes) and Similar pages")
    ap.add_argument("--measure", type=Path, default=None, help=argparse.SUPPRESS)  # child mode
    args = ap.parse_args()
    if args.measure is not None:
        print(json.dumps(measure(args.measure, args.renders, args.map)))
        return 0
    out = args.out or Path(tempfile.mkdtemp(prefix="selavi-app-scale-"))
    run_dir = synthesise(out, args.clips, args.heads, args.clusters, args.dim)
    cmd = [sys.executable, __file__, "--measure", str(run_dir), "--renders", str(args.renders)]
    if args.map:
        cmd.append("--map")
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if res.returncode:
        print(res.stdout[-4000:], res.stderr[-4000:])
        return res.returncode
    result = json.loads(res.stdout.strip().splitlines()[-1])
    print(json.dumps(result, indent=2))
    c, m = result["clusters"], result["compare"]
    print(
        f"\nClusters page (largest cluster {result['clusters_largest_size']:,} clips): median {c['median_s']:.3f} s, "
        f"p95 {c['p95_s']:.3f} s (target < 1 s); cold {result['clusters_cold_s']:.2f} s"
    )
    print(
        f"Compare page: median {m['median_s']:.3f} s, p95 {m['p95_s']:.3f} s (target < 2 s); "
        f"cold {result['compare_cold_s']:.2f} s"
    )
    print(f"Peak RSS of the server process: {result['peak_rss_gb']:.2f} GB (target < 3 GB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
