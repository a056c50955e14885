"""Raw-input features for the no-learning baselines of ``selavi evaluate``.

How much of a run's cluster quality is SeLaVi's doing? k-means on the inputs themselves answers it:
a few grey frames of each clip (tiny and per-clip standardised, so a clip's overall brightness and
colour, which say little about its content, do not decide its cluster) and the per-band mean and
spread over time of its log-mel (the sound's average spectrum and how much each band varies).

The assignment stage computes them from the same clip-cache rows as the learned features and saves
them in the run folder (``RUN_DIR/features/raw_video.npy`` and ``raw_audio.npy``, float32, run row
order); evaluation reads only the run folder. Both passes are cheap: a few frames and a cached or
chunked log-mel per clip.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from selavi_core.config import RAW_BASELINE, Preset, RawBaselineSpec, default_workers
from selavi_core.errors import MediaError, RunError
from selavi_core.progress import progress
from selavi_core.training.windows import ClipFiles, ClipSource


class ClipArrays(Protocol):
    """Decoded clips as arrays (a ``ClipCache``, or a chunk decoded from the original files)."""

    @property
    def frames(self) -> np.ndarray: ...
    @property
    def n_frames(self) -> np.ndarray: ...
    @property
    def audio(self) -> np.ndarray: ...
    @property
    def n_samples(self) -> np.ndarray: ...
    @property
    def log_mels(self) -> np.ndarray | None: ...


@dataclass
class _Decoded:
    frames: np.ndarray
    n_frames: np.ndarray
    audio: np.ndarray
    n_samples: np.ndarray
    log_mels: np.ndarray | None = None

#: File names inside ``RUN_DIR/features``, per modality (written by ``run.write_run``).
RAW_FILES = {"video": "raw_video.npy", "audio": "raw_audio.npy"}

#: Clips per chunk of frames: bounds memory (256 clips x 4 frames x 128^2 x 3 bytes = 50 MB at the paper's cache size).
CHUNK = 256
#: ... and log-mel values per chunk of audio (2^24 float32 = 64 MB: 64 ten-second clips of 257 bands).
AUDIO_CHUNK_VALUES = 1 << 24


def frame_indices(n_frames: np.ndarray, count: int) -> np.ndarray:
    """(N, count) frame indices evenly spread over each clip's ``n_frames`` valid frames (centres of equal parts)."""
    n = np.maximum(np.asarray(n_frames, dtype=np.int64), 1)[:, None]
    idx = np.floor((np.arange(count)[None, :] + 0.5) * n / count).astype(np.int64)
    return np.minimum(idx, n - 1)


def _standardise_rows(x: np.ndarray) -> np.ndarray:
    """Each row to zero mean and unit variance (a constant row becomes zeros)."""
    x = x - x.mean(axis=1, keepdims=True)
    std = x.std(axis=1, keepdims=True)
    return x / np.where(std > 0, std, 1.0)


def raw_video_features(cache: ClipArrays, rows: np.ndarray, spec: RawBaselineSpec = RAW_BASELINE) -> np.ndarray:
    """(N, frames * side^2) float32: ``spec.frames`` grey frames per clip, area-downsampled to ``spec.side``
    pixels square, flattened, each clip standardised over all its pixels."""
    import torch
    import torch.nn.functional as F

    rows = np.asarray(rows, dtype=np.int64)
    dim = spec.frames * spec.side * spec.side
    out = np.empty((len(rows), dim), np.float32)
    frames, n_frames = cache.frames, cache.n_frames
    starts = range(0, len(rows), CHUNK)
    for i in progress(starts, total=len(starts), desc="raw video features", unit="chunk"):
        r = rows[i : i + CHUNK]
        clips = frames[r[:, None], frame_indices(n_frames[r], spec.frames)]  # (B, F, S, S, 3) uint8
        grey = torch.from_numpy(clips).float().mean(dim=-1)  # (B, F, S, S)
        small = F.interpolate(grey, size=(spec.side, spec.side), mode="area")  # frames as channels
        out[i : i + len(r)] = _standardise_rows(small.reshape(len(r), dim).numpy())
    return out


def _band_stats(log_mels: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(B, n_mels, T) log-mels, (B,) valid frames each -> (B, 2 n_mels): per-band mean, then std, over time."""
    out = np.empty((len(valid), 2 * log_mels.shape[1]), np.float32)
    for j, v in enumerate(valid):
        clip = log_mels[j, :, : max(int(v), 1)]
        out[j] = np.concatenate([clip.mean(axis=1, dtype=np.float64), clip.std(axis=1, dtype=np.float64)])
    return out


def raw_audio_features(cache: ClipArrays, rows: np.ndarray, preset: Preset) -> np.ndarray:
    """(N, 2 n_mels) float32: per mel band, the mean and the std over time of the whole clip's log-mel.

    The log-mel is the model's (``preset.audio``): read from the cache's whole-clip log-mels when it has
    them, else computed with ``audio.log_mel`` at the precision the model's input uses. Frames past a
    clip's end (padding in the cache) are left out.
    """
    import torch

    from selavi_core.model.logmel import frame_count, log_mel

    spec = preset.audio
    rows = np.asarray(rows, dtype=np.int64)
    n_samples = cache.n_samples
    out = np.empty((len(rows), 2 * spec.n_mels), np.float32)
    cached = cache.log_mels
    valid_all = np.array([frame_count(int(s), spec) for s in n_samples[rows]], dtype=np.int64)
    longest = int(valid_all.max()) if len(rows) else 1
    chunk = int(np.clip(AUDIO_CHUNK_VALUES // (spec.n_mels * longest), 1, CHUNK))
    starts = range(0, len(rows), chunk)
    for i in progress(starts, total=len(starts), desc="raw log-mel statistics", unit="chunk"):
        r, valid = rows[i : i + chunk], valid_all[i : i + chunk]
        if cached is not None:
            mels = np.asarray(cached[r, :, : int(valid.max())])
        else:
            length = max(1, int(n_samples[r].max()))
            wave = torch.from_numpy(np.asarray(cache.audio[r, :length], dtype=np.float32))
            mels = log_mel(wave, spec, dtype=None if spec.exact else torch.float32)[:, 0].numpy()
        valid = np.minimum(valid, mels.shape[2])
        out[i : i + len(r)] = _band_stats(mels, valid)
    return out


def raw_features(
    cache: ClipSource, rows: np.ndarray, preset: Preset, spec: RawBaselineSpec = RAW_BASELINE
) -> dict[str, np.ndarray]:
    """Both raw feature blocks of source ``rows``, keyed by modality like ``RAW_FILES``."""
    if isinstance(cache, ClipFiles):
        return _raw_features_from_files(cache, rows, preset, spec)
    return {"video": raw_video_features(cache, rows, spec), "audio": raw_audio_features(cache, rows, preset)}


def _decode_for_raw(args: tuple[str, float, float, int, int, int]) -> tuple[np.ndarray, np.ndarray] | None:
    """Worker: ``count`` frames at the centres of equal parts of the clip (short side ``side``, centre square) and
    its audio, or None when it does not decode."""
    from selavi_core.media import decode_clip

    path, start, end, count, side, sample_rate = args
    dur = end - start
    try:
        clip = decode_clip(path, start + dur / (2 * count), start + dur / (2 * count) + dur, fps=count / dur,
                           short_side=side, audio=False)  # fmt: skip
        sound = decode_clip(path, start, end, sample_rate=sample_rate, video=False)
    except MediaError:
        return None
    f = clip.frames[:count]
    h, w = f.shape[1:3]
    y0, x0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
    frames = np.zeros((count, side, side, 3), np.uint8)
    part = f[:, y0 : y0 + side, x0 : x0 + side]
    frames[: len(part), : part.shape[1], : part.shape[2]] = part
    return frames, sound.audio


def _raw_features_from_files(
    files: ClipFiles, rows: np.ndarray, preset: Preset, spec: RawBaselineSpec, chunk: int = 64
) -> dict[str, np.ndarray]:
    """Raw features of clips read from their files (no cache): each clip (up to ``cache.max_seconds``) is decoded
    once more, in a process pool, a chunk at a time."""
    rows = np.asarray(rows, dtype=np.int64)
    out: dict[str, list[np.ndarray]] = {"video": [], "audio": []}
    side, sr = preset.cache.short_side, preset.audio.sample_rate
    ends = np.minimum(files.end_s, files.start_s + preset.cache.max_seconds)
    with ProcessPoolExecutor(max_workers=preset.optim.data_workers() or default_workers()) as pool:
        for i in range(0, len(rows), chunk):
            r = rows[i : i + chunk]
            jobs = [(str(files.paths[j]), float(files.start_s[j]), float(ends[j]), spec.frames, side, sr) for j in r]
            decoded = list(pool.map(_decode_for_raw, jobs))
            longest = max([1] + [len(d[1]) for d in decoded if d is not None])
            frames = np.zeros((len(r), spec.frames, side, side, 3), np.uint8)
            audio = np.zeros((len(r), longest), np.float32)
            n_samples = np.zeros(len(r), np.int64)
            for k, d in enumerate(decoded):
                if d is not None:
                    frames[k], audio[k, : len(d[1])], n_samples[k] = d[0], d[1], len(d[1])
            arrays = _Decoded(frames, np.full(len(r), spec.frames), audio, n_samples)
            out["video"].append(raw_video_features(arrays, np.arange(len(r)), spec))
            out["audio"].append(raw_audio_features(arrays, np.arange(len(r)), preset))
    return {k: np.concatenate(v) if v else np.zeros((0, 0), np.float32) for k, v in out.items()}


def load_raw_features(run_dir: str | os.PathLike, n_clips: int) -> dict[str, np.ndarray]:
    """The run's raw feature blocks (memory-mapped), or ``RunError`` saying why they cannot be used.

    Run folders written before raw features existed lack the files; a folder whose assignments were
    rewritten by other means may hold blocks of another length. Either way ``selavi assign`` again fixes it.
    """
    folder = Path(run_dir) / "features"
    missing = [name for name in RAW_FILES.values() if not (folder / name).is_file()]
    if missing:
        raise RunError(
            f"the run folder has no {' or '.join(missing)} (written by an older version): "
            "run `selavi assign` again to add them"
        )
    out = {modality: np.load(folder / name, mmap_mode="r") for modality, name in RAW_FILES.items()}
    for modality, x in out.items():
        if x.ndim != 2 or x.shape[0] != n_clips:
            raise RunError(
                f"features/{RAW_FILES[modality]} has shape {x.shape} but the run has {n_clips} clips: "
                "run `selavi assign` again to rewrite it"
            )
    return out
