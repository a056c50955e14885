"""Small real run folders for the label-store and export tests (no pytest in here: the worker imports it).

``make_label_run`` writes a catalog (``clips.parquet`` with every catalog column, via pandas) and a
run folder (``write_run``) whose structure the tests can check against:

- clip ``i`` is in cluster ``i % K`` of head 0 and ``(i // 3) % K`` of head 1;
- inside every head-0 cluster the features form two well-separated blobs (members with even
  ``i // K`` in one, odd in the other), so a k-means split into two has one right answer;
- the first ``n_youtube`` clips carry a YouTube id (``source_id``) and the segment's place in the
  video (``yt_start_s``/``yt_end_s`` as strings, as ingest writes layout extras); the rest have none;
- with ``media_dir``, clips point at real video files written by ``media_factory`` (some clips are
  windows in a longer file).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from selavi_core.runs.run import RunMeta, write_run

CATALOG_COLUMNS = (
    "clip_id", "path", "start_s", "end_s", "label", "split", "duration_s", "fps", "width", "height",
    "has_audio", "video_codec", "audio_rate", "status", "error", "source_id",
)  # fmt: skip


def clip_ids(n: int) -> list[str]:
    # opaque ids (no label, no file name), like the catalog's
    return [f"k{(i * 7919) % 100_003:06d}x{i:04d}" for i in range(n)]


def youtube_id(i: int) -> str:
    """An 11-character YouTube-style id with '-' and '_' in it (as real ones have)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    rng = np.random.default_rng(1000 + i)
    return "".join(alphabet[j] for j in rng.integers(0, 64, size=11))


def make_media(media_dir: Path) -> dict[str, Path]:
    """Three real short clips and one longer file that holds windows."""
    from media_factory import make_video

    media_dir.mkdir(parents=True, exist_ok=True)
    files = {f"short{j}": make_video(media_dir / f"short{j}.mp4", duration=1.0, fps=10, size=(64, 48), seed=j)
             for j in range(3)}  # fmt: skip
    files["long"] = make_video(media_dir / "long.mp4", duration=6.0, fps=10, size=(64, 48), seed=9)
    return files


def make_label_run(
    root: Path,
    *,
    n: int = 48,
    heads: int = 2,
    k: int = 4,
    n_youtube: int | None = None,
    media_dir: Path | None = None,
    seed: int = 0,
) -> Path:
    """Write ``root/catalog`` and ``root/run``; returns the run folder."""
    rng = np.random.default_rng(seed)
    ids = clip_ids(n)
    idx = np.arange(n)
    n_youtube = n * 3 // 4 if n_youtube is None else n_youtube
    if media_dir is not None:
        files = make_media(media_dir)
        paths, starts, ends, durs = [], [], [], []
        for i in range(n):
            if i % 4 == 3:  # a 1 s window in the 6 s file
                s = float(i % 5)
                paths.append(str(files["long"]))
                starts.append(s)
                ends.append(s + 1.0)
                durs.append(6.0)
            else:
                paths.append(str(files[f"short{i % 3}"]))
                starts.append(0.0)
                ends.append(1.0)
                durs.append(1.0)
    else:
        paths = [f"videos/{c}.mp4" for c in ids]  # relative: resolved against the catalog folder
        starts, ends, durs = [0.0] * n, [2.0] * n, [2.0] * n
    cat = pd.DataFrame(
        {
            "clip_id": ids,
            "path": paths,
            "start_s": starts,
            "end_s": ends,
            "label": [f"gt{i % k}" for i in idx],
            "split": ["train" if i % 5 else "test" for i in idx],
            "duration_s": durs,
            "fps": 10.0,
            "width": 64,
            "height": 48,
            "has_audio": True,
            "video_codec": "h264",
            "audio_rate": 24_000,
            "status": "ok",
            "error": None,
            "source_id": [youtube_id(i) if i < n_youtube else None for i in idx],
            "yt_start_s": [str(10 * i) if i < n_youtube else None for i in idx],
            "yt_end_s": [str(10 * i + 10) if i < n_youtube else None for i in idx],
        }
    )
    catalog_dir = root / "catalog"
    catalog_dir.mkdir(parents=True, exist_ok=True)
    cat.to_parquet(catalog_dir / "clips.parquet", index=False)

    joint = np.stack([idx % k if h == 0 else ((idx // 3) + h - 1) % k for h in range(heads)], axis=1).astype(np.int32)
    blob = ((idx // k) % 2).astype(np.float32)
    centers = rng.normal(size=(k, 8)).astype(np.float32) * 4
    fv = centers[joint[:, 0]] + 8 * blob[:, None] * np.eye(8, dtype=np.float32)[0] + rng.normal(size=(n, 8)) * 0.05
    # the blobs point in different audio directions (each modality is L2-normalised before a split's k-means,
    # so a blob of near-zero audio would be noise pointing anywhere)
    fa = rng.normal(size=(n, 4)).astype(np.float32) * 0.05 + 8 * np.eye(4, dtype=np.float32)[blob.astype(int)]
    conf = np.round(rng.uniform(0.05, 0.95, size=(n, heads)), 3).astype(np.float32)
    meta = RunMeta(catalog_dir=str(catalog_dir), catalog_hash="cafe0123", heads=heads, clusters=k, preset="cpu-small",
                   checkpoint="model.pt", checkpoint_hash="beef4567", source="synthetic")  # fmt: skip
    run_dir = root / "run"
    write_run(
        run_dir, meta, ids, joint=joint, video=joint, audio=joint, confidence=conf, margin=conf / 2,
        features_video=fv, features_audio=fa, priors=np.full((heads, k), 1.0 / k),
    )  # fmt: skip
    return run_dir
