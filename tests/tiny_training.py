"""The cpu-small code path at toy size, and the tiny real catalog it trains on (shared by the training tests)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from media_factory import make_video

from selavi_core.cli import main
from selavi_core.config import CPU_SMALL

N_CLIPS = 24

#: cpu-small at toy size, so that a whole training run takes seconds (exactly ``epochs``: no sample budget).
TINY = CPU_SMALL.with_overrides(
    video={"num_frames": 4, "crop": 24, "train_short_side": (26, 30)},
    cache={"fps": 4.0, "short_side": 28},
    model={"video_widths": (8, 8, 16, 16), "audio_widths": (8, 8, 16, 16), "heads": 3, "clusters": 2},
    optim={"epochs": 2, "batch_size": 6, "train_samples": None},
    schedule={"n_opts": 4, "bn_warmup_batches": 2},
)


def make_tiny_catalog(src: Path, out: Path) -> Path:
    """24 real 2 s H.264/AAC clips of two visual/audio patterns in ``src``, ingested through the CLI into ``out``."""
    rows = []
    for i in range(N_CLIPS):
        cls = i % 2
        path = make_video(
            src / f"c{i:02d}.mp4", duration=2.0, fps=12, size=(48, 36), seed=cls * 100 + i, sample_rate=16_000
        )
        rows.append({"path": path.name, "label": f"class{cls}"})
    pd.DataFrame(rows).to_csv(src / "labels.csv", index=False)
    assert main(["ingest", str(src), "--format", "csv", "--out", str(out)]) == 0
    return out
