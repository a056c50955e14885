"""Cost of the raw-input features that ``write_assignments`` adds to a run folder (selavi_core/runs/raw_features.py).

    .venv/bin/python bench/bench_raw_features.py [--n 3000] [--preset cpu-small] [--seconds 2] [--cache DIR]

Writes a clip cache of ``--n`` clips with the preset's array shapes (random frames, a chirp per clip; for
presets with inexact log-mels the whole-clip log-mels too) and times ``raw_video_features`` and
``raw_audio_features`` over all its rows, twice (cold after writing, then warm). ``--cache`` times an
existing cache folder instead. Target: seconds for a few thousand clips.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("SELAVI_NO_PROGRESS", "1")


def synthetic_cache(folder: Path, n: int, preset, seconds: float) -> Path:
    """A finished-looking cache folder with the shapes ``build_cache`` would write for ``n`` clips."""
    import torch

    from selavi_core.model.logmel import frame_count, log_mel

    rng = np.random.default_rng(0)
    spec, sr, s = preset.cache, preset.audio.sample_rate, preset.cache.short_side
    t_max, s_max = max(1, int(round(seconds * spec.fps))), int(np.ceil(seconds * sr))
    frames = np.lib.format.open_memmap(folder / "frames.npy", mode="w+", dtype=np.uint8, shape=(n, t_max, s, s, 3))
    audio = np.lib.format.open_memmap(folder / "audio.npy", mode="w+", dtype=np.float16, shape=(n, s_max))
    t = np.arange(s_max) / sr
    for i in range(0, n, 256):
        b = min(256, n - i)
        frames[i : i + b] = rng.integers(0, 256, (b, t_max, s, s, 3), dtype=np.uint8)
        f0 = rng.uniform(100, 2000, (b, 1))
        audio[i : i + b] = (0.3 * np.sin(2 * np.pi * f0 * t * (1 + 0.2 * t))).astype(np.float16)
    frames.flush()
    audio.flush()
    np.save(folder / "n_frames.npy", np.full(n, t_max, np.int32))
    np.save(folder / "n_samples.npy", np.full(n, s_max, np.int32))
    if not preset.audio.exact:
        f_max = frame_count(s_max, preset.audio)
        mels = np.lib.format.open_memmap(
            folder / "logmel.npy", mode="w+", dtype=np.float32, shape=(n, preset.audio.n_mels, f_max)
        )
        for i in range(0, n, 256):
            wave = torch.from_numpy(np.asarray(audio[i : i + 256], np.float32))
            mels[i : i + 256] = log_mel(wave, preset.audio, dtype=torch.float32)[:, 0].numpy()
        mels.flush()
    ids = [f"c{i:06d}" for i in range(n)]
    pd.DataFrame({"clip_id": ids, "ok": True, "error": None}).to_parquet(folder / "clips.parquet", index=False)
    meta = {"fps": spec.fps, "short_side": s, "sample_rate": sr, "t_max": t_max, "s_max": s_max, "n": n}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def main() -> None:
    from selavi_core.config import get_preset
    from selavi_core.runs.raw_features import raw_audio_features, raw_video_features
    from selavi_core.training.clip_cache import ClipCache

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--preset", default="cpu-small")
    ap.add_argument("--seconds", type=float, default=2.0, help="clip length of the synthetic cache")
    ap.add_argument("--cache", type=Path, help="time this existing cache folder instead")
    args = ap.parse_args()
    preset = get_preset(args.preset)
    with tempfile.TemporaryDirectory(prefix="bench-raw-") as tmp:
        folder = args.cache or synthetic_cache(Path(tmp), args.n, preset, args.seconds)
        cache = ClipCache(folder)
        rows = cache.ok_rows
        print(
            f"{len(rows)} clips, preset {preset.name}, cache {folder}, whole-clip log-mels: {cache.log_mels is not None}"
        )
        for attempt in ("first", "again"):
            t0 = time.perf_counter()
            video = raw_video_features(cache, rows)
            t1 = time.perf_counter()
            audio = raw_audio_features(cache, rows, preset)
            t2 = time.perf_counter()
            per_k = 1000 / len(rows)
            print(
                f"{attempt}: video {video.shape} {t1 - t0:.2f} s ({(t1 - t0) * per_k:.2f} s / 1000 clips), "
                f"audio {audio.shape} {t2 - t1:.2f} s ({(t2 - t1) * per_k:.2f} s / 1000 clips)"
            )


if __name__ == "__main__":
    main()
