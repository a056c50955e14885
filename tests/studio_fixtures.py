"""Small but real run folders for the Studio's tests (and the scale benchmark's media).

``make_studio_run`` writes a catalog (``clips.parquet`` with every catalog column), real H.264/AAC
clips encoded by ``media_factory``, browser previews + posters with their ``previews/index.parquet``
(built by ``selavi_core.media.preview`` like ``selavi previews`` does), and a run folder written with
``selavi_core.runs.run.write_run``. Assignments follow the ground truth with deliberate noise so that
purity, agreement and NMI are neither 0 nor 1, and tests recompute them independently.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from media_factory import make_video

from selavi_core.catalog.schema import CATALOG_COLUMNS
from selavi_core.runs.run import RunMeta, write_run

CLASSES = ("zero", "one", "two")


def catalog_frame(n: int, paths: list[str], labels: list[str | None], *, clip_s: float = 1.5) -> pd.DataFrame:
    """A catalog with every column of ``CATALOG_COLUMNS``; clip ``i`` is the first ``clip_s`` of ``paths[i]``."""
    df = pd.DataFrame(
        {
            "clip_id": [f"c{i:06d}" for i in range(n)],
            "path": paths,
            "start_s": np.zeros(n),
            "end_s": np.full(n, clip_s),
            "label": pd.Series(labels, dtype="string"),
            "split": ["train"] * n,
            "duration_s": np.full(n, clip_s),
            "fps": np.full(n, 25.0),
            "width": np.full(n, 160, dtype=np.int64),
            "height": np.full(n, 120, dtype=np.int64),
            "has_audio": np.ones(n, dtype=bool),
            "video_codec": ["h264"] * n,
            "audio_rate": np.full(n, 24_000, dtype=np.int64),
            "status": ["ok"] * n,
            "error": pd.Series([None] * n, dtype="string"),
            "source_id": [f"s{i % 997:04d}" for i in range(n)],
        }
    )
    assert list(df.columns) == list(CATALOG_COLUMNS)
    return df


def build_previews(catalog_dir: Path, df: pd.DataFrame, *, only_rows: list[int] | None = None) -> pd.DataFrame:
    """Previews (H.264/AAC MP4 + poster JPEG) per distinct source file, and ``previews/index.parquet``."""
    from selavi_core.media.preview import ensure_preview

    out_dir = catalog_dir / "previews"
    out_dir.mkdir(parents=True, exist_ok=True)
    made: dict[tuple[str, float, float], tuple[str, str]] = {}
    rows = []
    for i, r in df.iterrows():
        if only_rows is not None and i not in only_rows:
            continue
        key = (r["path"], float(r["start_s"]), float(r["end_s"]))
        if key not in made:
            files = ensure_preview(r["path"], r["start_s"], r["end_s"], out_dir)
            made[key] = (str(files.mp4), str(files.poster))
        mp4, poster = made[key]
        rows.append({"clip_id": r["clip_id"], "mp4": mp4, "poster": poster, "error": None})
    index = pd.DataFrame(rows, columns=["clip_id", "mp4", "poster", "error"])
    index.to_parquet(out_dir / "index.parquet", index=False)
    return index


def make_studio_run(
    root: Path,
    *,
    n: int = 48,
    heads: int = 3,
    k: int = 4,
    n_sources: int = 9,
    seed: int = 0,
    previews: bool = True,
) -> tuple[Path, Path]:
    """Write ``root/catalog`` and ``root/run``; return (catalog_dir, run_dir).

    Clip ``i`` has class ``CLASSES[i % 3]`` (clip ``n - 1`` is unlabelled) and plays source file
    ``i % n_sources`` (a real 1.5 s H.264/AAC clip). Head ``h`` puts class ``c`` in cluster ``(c + h) % k``
    except every ``(5 + h)``-th clip, which goes to cluster ``(c + h + 1) % k``; its video-only and
    audio-only predictions equal the joint one except every ``(7 - h)``-th (video, moved by 1) and
    every ``(4 + h)``-th (audio, moved by 2) clip.
    """
    rng = np.random.default_rng(seed)
    catalog_dir, run_dir = root / "catalog", root / "run"
    media_dir = root / "media"
    sources = [
        make_video(media_dir / f"src{j:02d}.mp4", duration=1.5, fps=25, size=(160, 120), seed=j, noise=3.0)
        for j in range(n_sources)
    ]
    cls = np.arange(n) % len(CLASSES)
    labels: list[str | None] = [CLASSES[c] for c in cls]
    labels[-1] = None
    df = catalog_frame(n, [str(sources[i % n_sources]) for i in range(n)], labels)
    catalog_dir.mkdir(parents=True, exist_ok=True)
    df.to_parquet(catalog_dir / "clips.parquet", index=False)
    if previews:
        build_previews(catalog_dir, df)

    i = np.arange(n)
    joint = np.stack([np.where(i % (5 + h) == 0, (cls + h + 1) % k, (cls + h) % k) for h in range(heads)], axis=1)
    video = joint.copy()
    audio = joint.copy()
    for h in range(heads):
        v, a = i % (7 - h) == 0, i % (4 + h) == 0
        video[v, h] = (video[v, h] + 1) % k
        audio[a, h] = (audio[a, h] + 2) % k
    confidence = rng.uniform(0.3, 1.0, size=(n, heads)).astype(np.float32)
    margin = (confidence * rng.uniform(0.1, 0.9, size=(n, heads))).astype(np.float32)
    centres_v = rng.normal(size=(len(CLASSES), 16))
    centres_a = rng.normal(size=(len(CLASSES), 8))
    fv = centres_v[cls] + 0.3 * rng.normal(size=(n, 16))
    fa = centres_a[cls] + 0.3 * rng.normal(size=(n, 8))
    priors = np.full((heads, k), 1.0 / k)
    meta = RunMeta(catalog_dir=str(catalog_dir), catalog_hash="test", heads=heads, clusters=k, preset="cpu-small",
                   prior="uniform", source="synthetic")  # fmt: skip
    write_run(run_dir, meta, df["clip_id"].to_numpy(), joint=joint, video=video, audio=audio, confidence=confidence,
              margin=margin, features_video=fv, features_audio=fa, priors=priors)  # fmt: skip
    return catalog_dir, run_dir
