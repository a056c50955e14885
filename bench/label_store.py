"""Label store and export timings at VGG-Sound scale (not a test: run it by hand).

    .venv/bin/python bench/label_store.py [--clips 200000] [--heads 10] [--clusters 309] [--events 2000]

Synthesises a run (write_run + a catalog parquet), then measures: the latency of one acknowledged
edit (rename; SQLite WAL, synchronous=FULL), folding the log, effective labels of one head (cold and
cached), the cluster table, a k-means split proposal of a large cluster, and CSV / Label Studio
exports of every clip. Prints one line per measurement.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selavi_core.labels import LabelStore, fold  # noqa: E402
from selavi_core.labels.exports import export_labels  # noqa: E402
from selavi_core.runs.run import RunMeta, write_run  # noqa: E402

CATALOG_COLUMNS = (
    "clip_id", "path", "start_s", "end_s", "label", "split", "duration_s", "fps", "width", "height",
    "has_audio", "video_codec", "audio_rate", "status", "error", "source_id",
)  # fmt: skip


def synth(root: Path, n: int, heads: int, k: int) -> Path:
    rng = np.random.default_rng(0)
    ids = np.array([f"c{i:07d}" for i in range(n)], dtype=object)
    cat = pd.DataFrame({c: None for c in CATALOG_COLUMNS}, index=range(n))
    cat["clip_id"], cat["path"] = ids, [f"/media/{i}.mp4" for i in ids]
    cat["start_s"], cat["end_s"], cat["duration_s"], cat["status"] = 0.0, 10.0, 10.0, "ok"
    cat["source_id"] = [f"yt{i:09d}" for i in range(n)]
    (root / "catalog").mkdir(parents=True)
    cat.to_parquet(root / "catalog" / "clips.parquet", index=False)
    joint = rng.integers(0, k, size=(n, heads), dtype=np.int32)
    conf = rng.random((n, heads), dtype=np.float32)
    meta = RunMeta(catalog_dir=str(root / "catalog"), catalog_hash="x", heads=heads, clusters=k, preset="paper")
    feats = rng.normal(size=(n, 64)).astype(np.float16)
    return write_run(root / "run", meta, ids, joint=joint, video=joint, audio=joint, confidence=conf, margin=conf,
                     features_video=feats, features_audio=feats[:, :32], priors=np.full((heads, k), 1 / k))  # fmt: skip


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--clips", type=int, default=200_000)
    p.add_argument("--heads", type=int, default=10)
    p.add_argument("--clusters", type=int, default=309)
    p.add_argument("--events", type=int, default=2000)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run_dir = synth(root, a.clips, a.heads, a.clusters)
        store = LabelStore.open(run_dir)
        rng = np.random.default_rng(1)
        ids = [str(c) for c in store.run.clip_ids]
        lat = []
        for i in range(a.events):
            t = time.perf_counter()
            if i % 2:
                store.rename_cluster(0, int(rng.integers(a.clusters)), f"name{i}", annotator="bench",
                                     expected_version=store.version())  # fmt: skip
            else:
                store.override_clips([ids[int(rng.integers(a.clips))]], f"o{i}", annotator="bench",
                                     expected_version=store.version())  # fmt: skip
            lat.append(time.perf_counter() - t)
        lat_ms = np.array(lat) * 1000
        print(f"edit (version read + append + fsync), {a.events} edits: median {np.median(lat_ms):.1f} ms, "
              f"p95 {np.percentile(lat_ms, 95):.1f} ms")  # fmt: skip
        events = store.events()
        t, _ = timed(lambda: fold(events), 5)
        print(f"fold of {len(events)} events: {t * 1000:.1f} ms")
        store2 = LabelStore.open(run_dir)
        t, _ = timed(lambda: store2.effective_labels(0))
        print(f"effective labels, {a.clips} clips, cold (new store, load log, fold): {t * 1000:.0f} ms")
        t, _ = timed(lambda: store2.effective_labels(0), 5)
        print(f"effective labels, cached: {t * 1000:.1f} ms")
        t, _ = timed(lambda: store2.clusters(0), 3)
        print(f"cluster table ({a.clusters} clusters): {t * 1000:.0f} ms")
        big = int(np.bincount(store.run.assignments("joint")[:, 0]).argmax())
        t, prop = timed(lambda: store2.propose_split(0, big, k=3))
        print(f"k-means split proposal of cluster {big} ({sum(map(len, prop.values()))} members): {t * 1000:.0f} ms")
        t, _ = timed(lambda: store2.label_clips(ids[: a.clips // 2], "half", annotator="bench", expected_version=None))
        print(f"label_clips of {a.clips // 2} clips in one event: {t * 1000:.0f} ms")
        t, _ = timed(lambda: store2.effective_labels(0))
        print(f"effective labels after it: {t * 1000:.0f} ms")
        for fmt, name in (("csv", "labels.csv"), ("labelstudio", "tasks.json")):
            t, res = timed(lambda fmt=fmt, name=name: export_labels(store2, fmt, root / name))
            print(f"export {fmt}, {res.rows} records: {t:.2f} s")


if __name__ == "__main__":
    main()
