"""Training windows decoded from the original files, for presets without a whole-set cache (``paper``).

At the paper's inputs (30 frames of 1 s at 128 px, ten-second clips) a decoded cache takes 14.7 MB a clip,
2.9 TB for VGG-Sound's 200k clips. ``ClipFiles`` stands in for the cache (the same ``index`` and ``ok_rows``,
the catalog's ok clips in catalog order) and ``WindowBatchMaker`` decodes each row's window with
``selavi_core.media.decode_clip`` when its batch is made: a random window of ``video.seconds`` inside the
clip when training, the centred one when evaluating, ``video.num_frames`` frames at short side
``cache.short_side`` (a centre square, as the cache holds) and the audio at ``audio.sample_rate``. The
augmentations are the cache path's (``selavi_core.training.batches``). Decoding is what makes this path
expensive, so batches come from DataLoader workers (``selavi_core.training.loader``, ``OptimSpec.workers``).

A clip that fails to decode at training time (the catalog's probe said it was fine) gives black frames and
silence for that window, and is counted in ``WindowBatchMaker.failed``: one bad file must not end a long run.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from selavi_core.catalog.schema import ok_clips
from selavi_core.config import Preset
from selavi_core.errors import CatalogError, MediaError
from selavi_core.media import decode_clip
from selavi_core.training.batches import (
    BatchMaker,
    augment_spectrogram,
    video_inputs,
    volume_gains,
    wave_log_mels,
)
from selavi_core.training.clip_cache import ClipCache, build_cache


class ClipFiles:
    """The catalog's decodable clips as a training source: ``index`` (clip_id, ok, path, start_s, end_s) and
    ``ok_rows``, like a ``ClipCache``, with nothing decoded in advance."""

    def __init__(self, catalog: pd.DataFrame):
        rows = ok_clips(catalog)
        if rows.empty:
            raise CatalogError("the catalog has no decodable clips")
        self.index = pd.DataFrame(
            {
                "clip_id": rows["clip_id"].astype(str),
                "ok": np.ones(len(rows), bool),
                "path": rows["path"].astype(str),
                "start_s": rows["start_s"].to_numpy(float),
                "end_s": rows["end_s"].to_numpy(float),
            }
        )
        self.paths = self.index["path"].to_numpy()
        self.start_s = self.index["start_s"].to_numpy()
        self.end_s = self.index["end_s"].to_numpy()
        self.ok_rows = np.arange(len(rows))


class WindowBatchMaker:
    """Turns ``ClipFiles`` rows into (video (B,3,T,crop,crop), log-mel (B,1,F,T')) tensors, decoding each window.

    Same interface and draws as ``BatchMaker.batch``: the window starts first, then the video's and the audio's
    augmentations."""

    def __init__(self, files: ClipFiles, preset: Preset):
        self.files, self.preset = files, preset
        self.v, self.a = preset.video, preset.audio
        self.failed: set[int] = set()

    def _starts(self, rows: np.ndarray, train: bool, rng: np.random.Generator) -> np.ndarray:
        """Window start in seconds of the file: random inside the clip when training, centred for evaluation."""
        start, end = self.files.start_s[rows], self.files.end_s[rows]
        slack = np.maximum(end - start - self.v.seconds, 0.0)
        return start + (rng.random(len(rows)) * slack if train else slack / 2)

    def decode(self, row: int, start: float) -> tuple[np.ndarray, np.ndarray]:
        """(T,S,S,3) uint8 frames and (samples,) float32 audio of one window (black and silent when it fails)."""
        v, a, s = self.v, self.a, self.preset.cache.short_side
        frames = np.zeros((v.num_frames, s, s, 3), np.uint8)
        audio = np.zeros(a.n_samples, np.float32)
        try:
            clip = decode_clip(
                str(self.files.paths[row]),
                float(start),
                float(start) + v.seconds,
                fps=v.num_frames / v.seconds,
                short_side=s,
                sample_rate=a.sample_rate,
            )
        except MediaError:
            self.failed.add(int(row))
            return frames, audio
        f = clip.frames[: v.num_frames]
        h, w = f.shape[1:3]
        y0, x0 = max(0, (h - s) // 2), max(0, (w - s) // 2)
        f = f[:, y0 : y0 + s, x0 : x0 + s]
        frames[: len(f), : f.shape[1], : f.shape[2]] = f
        if 0 < len(f) < v.num_frames:  # hold the last frame
            frames[len(f) :] = frames[len(f) - 1]
        m = min(len(clip.audio), a.n_samples)
        audio[:m] = clip.audio[:m]
        return frames, audio

    def batch(self, rows: np.ndarray, *, train: bool, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        rows = np.asarray(rows)
        starts = self._starts(rows, train, rng)
        decoded = [self.decode(int(r), float(t)) for r, t in zip(rows, starts, strict=True)]
        clips = np.stack([f for f, _ in decoded])
        waves = np.stack([w for _, w in decoded])
        video = video_inputs(clips, self.v, train, rng)
        gain = volume_gains(len(rows), self.a, train, rng)
        audio = augment_spectrogram(wave_log_mels(waves, self.a, gain), self.a, train, rng)
        return video, audio


#: Where training and assignment read clips from: the decoded cache or the original files.
ClipSource = ClipCache | ClipFiles


def open_source(
    catalog: pd.DataFrame,
    catalog_dir: str | os.PathLike,
    catalog_hash: str,
    preset: Preset,
    *,
    log: Callable[[str], None] = print,
    free_bytes: int | None = None,
) -> ClipSource:
    """The preset's clip source: the uint8 cache (built, after its size check, or reused) when
    ``cache.enabled``, else the original files (nothing is built)."""
    if preset.cache.enabled:
        return build_cache(catalog, catalog_dir, catalog_hash, preset, log=log, free_bytes=free_bytes)
    return ClipFiles(catalog)


def batch_maker(source: ClipSource, preset: Preset) -> BatchMaker | WindowBatchMaker:
    """The batch maker that reads ``source``."""
    if isinstance(source, ClipFiles):
        return WindowBatchMaker(source, preset)
    return BatchMaker(source, preset)
