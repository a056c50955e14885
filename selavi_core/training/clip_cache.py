"""Decoded uint8 clip cache: decode every catalog clip once per preset, train from memory-mapped arrays.

Decoding MP4s every epoch is the bottleneck of training on a CPU (each SeLaVi Sinkhorn run is one or
more extra full passes over the data), so training and assignment read fixed-size arrays instead::

    CATALOG_DIR/cache/<key>/frames.npy     uint8   (N, T_max, S, S, 3)  frames at cache.fps, short side S, centre square
    CATALOG_DIR/cache/<key>/n_frames.npy   int32   (N,)                 valid frames per clip
    CATALOG_DIR/cache/<key>/audio.npy      float16 (N, S_max)           mono audio at audio.sample_rate
    CATALOG_DIR/cache/<key>/n_samples.npy  int32   (N,)
    CATALOG_DIR/cache/<key>/logmel.npy     float32 (N, n_mels, F_max)   log-mel of the whole clip (inexact presets only)
    CATALOG_DIR/cache/<key>/clips.parquet  clip_id, ok, error (row order of the arrays)
    CATALOG_DIR/cache/<key>/meta.json      written last: its presence marks the cache complete

Before it writes anything, the build estimates the arrays' size and refuses (``CacheSpaceError``, naming the
size, the free space and the remedies) when they would not fit on the disk with ``DISK_HEADROOM`` to spare.
Presets that decode windows from the original files instead (``CacheSpec.enabled`` False, the ``paper``
preset) never build it: ``selavi_core.training.windows``.

``key`` hashes everything that changes the arrays (cache spec, audio rate, catalog hash), so a
changed catalog or preset builds a new cache and a finished one is reused. The centre square crop
drops the borders of wide videos; training crops a smaller square inside it anyway.

For presets whose log-mel need not be bit-exact (``AudioSpec.exact`` False), the log-mel of the whole
clip is computed once too: a 1 s training window is then a slice of frames, and the volume jitter an
additive constant (a gain g scales every energy by g^2). On two cores this halves a labelling pass.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from selavi_core.config import CacheSpec, Preset, default_workers
from selavi_core.errors import MediaError, SelaviError
from selavi_core.progress import progress

#: Share of the disk's free space the cache may fill (the rest stays for checkpoints, runs and everything else).
DISK_HEADROOM = 0.9

#: The AudioSpec fields that change the cached whole-clip log-mel (training augmentations do not).
LOG_MEL_FIELDS = ("sample_rate", "n_mels", "n_fft", "win_s", "hop_s", "preemph", "low_hz", "high_hz", "exact")


def cache_key(preset: Preset, catalog_hash: str) -> str:
    # every field but ``enabled`` shapes the arrays (leaving it out keeps the keys of caches built before it existed)
    shape = {k: v for k, v in preset.cache.__dict__.items() if k != "enabled"}
    spec = {"cache": shape, "sample_rate": preset.audio.sample_rate, "catalog": catalog_hash}
    if not preset.audio.exact:
        spec["logmel"] = {k: getattr(preset.audio, k) for k in LOG_MEL_FIELDS}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    return f"{preset.name}-{digest}"


class CacheSpaceError(SelaviError):
    """The decoded cache would not fit on the disk; the message names the size, the free space and the remedies."""


def _gb(n: float) -> str:
    return f"{n / 1e9:,.1f} GB" if n >= 1e8 else f"{n / 1e6:,.1f} MB"


def cache_bytes_per_clip(preset: Preset, seconds: float) -> int:
    """Bytes one clip of ``seconds`` (at most ``cache.max_seconds``) takes in the cache: frames, audio, log-mel."""
    from selavi_core.model.logmel import frame_count

    spec = preset.cache
    seconds = min(seconds, spec.max_seconds)
    t_max = max(1, int(round(seconds * spec.fps)))
    s_max = max(1, int(math.ceil(seconds * preset.audio.sample_rate)))
    total = t_max * spec.short_side * spec.short_side * 3 + s_max * 2 + 8  # uint8 frames, float16 audio, counts
    if not preset.audio.exact:
        total += preset.audio.n_mels * frame_count(s_max, preset.audio) * 4
    return total


def check_cache_space(
    n_clips: int, seconds: float, preset: Preset, folder: str | os.PathLike, *, free_bytes: int | None = None
) -> int:
    """The cache's estimated size in bytes; ``CacheSpaceError`` when it would fill ``folder``'s disk.

    ``free_bytes`` stands in for the disk's free space (``shutil.disk_usage``) when given."""
    per_clip = cache_bytes_per_clip(preset, seconds)
    need = n_clips * per_clip
    free = shutil.disk_usage(folder).free if free_bytes is None else int(free_bytes)
    if need > DISK_HEADROOM * free:
        c = preset.cache
        raise CacheSpaceError(
            f"the decoded clip cache for {n_clips:,} clips would take {_gb(need)} ({_gb(per_clip)} a clip at "
            f"{c.fps:g} fps, {c.short_side} px, up to {c.max_seconds:g} s) but {folder} has {_gb(free)} free. "
            "Free space there, lower cache.max_seconds, cache.short_side or cache.fps, or decode windows from the "
            "original files during training instead (cache.enabled = False, as the paper preset does)"
        )
    return need


def _decode_one(args: tuple[str, float, float, CacheSpec, int]) -> tuple[np.ndarray, np.ndarray] | str:
    """Worker: decode one clip window into (frames S x S, audio) or return the error reason."""
    from selavi_core.media import decode_clip

    path, start, end, spec, sample_rate = args
    end = min(end, start + spec.max_seconds)
    try:
        clip = decode_clip(path, start, end, fps=spec.fps, short_side=spec.short_side, sample_rate=sample_rate)
    except MediaError as err:
        return err.reason
    frames = clip.frames
    h, w = frames.shape[1:3]
    s = spec.short_side
    y0, x0 = max(0, (h - s) // 2), max(0, (w - s) // 2)
    frames = frames[:, y0 : y0 + s, x0 : x0 + s]
    if frames.shape[1:3] != (s, s):  # a source smaller than the cache size: pad (rare; keeps shapes fixed)
        pad = np.zeros((frames.shape[0], s, s, 3), np.uint8)
        pad[:, : frames.shape[1], : frames.shape[2]] = frames
        frames = pad
    return frames, clip.audio


@dataclass
class ClipCache:
    """Read side of a finished cache; arrays are memory-mapped."""

    dir: Path

    @cached_property
    def meta(self) -> dict:
        return json.loads((self.dir / "meta.json").read_text())

    @cached_property
    def index(self) -> pd.DataFrame:
        return pd.read_parquet(self.dir / "clips.parquet")

    @cached_property
    def frames(self) -> np.ndarray:
        return np.load(self.dir / "frames.npy", mmap_mode="r")

    @cached_property
    def n_frames(self) -> np.ndarray:
        return np.load(self.dir / "n_frames.npy")

    @cached_property
    def audio(self) -> np.ndarray:
        return np.load(self.dir / "audio.npy", mmap_mode="r")

    @cached_property
    def n_samples(self) -> np.ndarray:
        return np.load(self.dir / "n_samples.npy")

    @cached_property
    def log_mels(self) -> np.ndarray | None:
        """(N, n_mels, F_max) whole-clip log-mels, or None when the preset computes them per window."""
        path = self.dir / "logmel.npy"
        return np.load(path, mmap_mode="r") if path.is_file() else None

    @property
    def fps(self) -> float:
        return float(self.meta["fps"])

    @property
    def sample_rate(self) -> int:
        return int(self.meta["sample_rate"])

    @cached_property
    def ok_rows(self) -> np.ndarray:
        """Rows that decoded; training and assignment only ever see these."""
        return np.flatnonzero(self.index["ok"].to_numpy())


def build_cache(
    catalog: pd.DataFrame,
    catalog_dir: str | os.PathLike,
    catalog_hash: str,
    preset: Preset,
    *,
    workers: int | None = None,
    log: Callable[[str], None] = print,
    free_bytes: int | None = None,
) -> ClipCache:
    """Decode the ok clips of ``catalog`` once (in parallel) or reuse the finished cache.

    A new cache is first sized (``check_cache_space``; ``free_bytes`` stands in for the disk's free space)."""
    out = Path(catalog_dir) / "cache" / cache_key(preset, catalog_hash)
    if (out / "meta.json").is_file():
        return ClipCache(out)
    rows = catalog[catalog["status"] == "ok"].reset_index(drop=True)
    if rows.empty:
        from selavi_core.errors import CatalogError

        raise CatalogError(f"catalog {catalog_dir} has no decodable clips")
    spec, sr = preset.cache, preset.audio.sample_rate
    durations = np.minimum(rows["end_s"].to_numpy(float) - rows["start_s"].to_numpy(float), spec.max_seconds)
    t_max = max(1, int(round(float(durations.max()) * spec.fps)))
    s_max = max(1, int(math.ceil(float(durations.max()) * sr)))
    n, s = len(rows), spec.short_side
    out.parent.mkdir(parents=True, exist_ok=True)
    check_cache_space(n, float(durations.max()), preset, out.parent, free_bytes=free_bytes)
    # A private build folder: two processes (say, two training runs) may build the same cache at once.
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".partial-", dir=out.parent))
    frames = np.lib.format.open_memmap(tmp / "frames.npy", mode="w+", dtype=np.uint8, shape=(n, t_max, s, s, 3))
    audio = np.lib.format.open_memmap(tmp / "audio.npy", mode="w+", dtype=np.float16, shape=(n, s_max))
    n_frames = np.zeros(n, np.int32)
    n_samples = np.zeros(n, np.int32)
    errors: list[str | None] = [None] * n
    jobs = [(r.path, float(r.start_s), float(r.end_s), spec, sr) for r in rows.itertuples()]
    workers = workers or default_workers()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = pool.map(_decode_one, jobs, chunksize=8)
        for i, res in enumerate(progress(results, total=n, desc="decoding clips into the cache", unit="clip")):
            if isinstance(res, str):
                errors[i] = res
                continue
            f, a = res
            t = min(len(f), t_max)
            frames[i, :t] = f[:t]
            if t < t_max and t > 0:  # hold the last frame so any window stays in range
                frames[i, t:] = f[t - 1]
            m = min(len(a), s_max)
            audio[i, :m] = a[:m]
            n_frames[i], n_samples[i] = t, m
    frames.flush()
    audio.flush()
    del frames, audio
    if not preset.audio.exact:
        _write_log_mels(tmp, n_samples, preset)
    np.save(tmp / "n_frames.npy", n_frames)
    np.save(tmp / "n_samples.npy", n_samples)
    ok = np.array([e is None for e in errors])
    pd.DataFrame({"clip_id": rows["clip_id"].astype(str), "ok": ok, "error": errors}).to_parquet(
        tmp / "clips.parquet", index=False
    )
    meta = {
        "fps": spec.fps,
        "short_side": s,
        "sample_rate": sr,
        "t_max": t_max,
        "s_max": s_max,
        "n": n,
        "n_ok": int(ok.sum()),
        "catalog_hash": catalog_hash,
        "preset": preset.name,
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    _publish(tmp, out)
    if not ok.all():
        reasons = pd.Series([e for e in errors if e]).value_counts()
        log(
            f"cache: {int((~ok).sum())} clips failed to decode and are skipped: "
            + "; ".join(f"{r} ({c})" for r, c in reasons.head(3).items())
        )
    return ClipCache(out)


def _publish(tmp: Path, out: Path) -> None:
    """Move a finished build into place; when another process got there first, keep its cache."""
    if (out / "meta.json").is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        return
    shutil.rmtree(out, ignore_errors=True)  # an unfinished cache left by a killed build
    try:
        os.rename(tmp, out)
    except OSError:
        if not (out / "meta.json").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _write_log_mels(cache_dir: Path, n_samples: np.ndarray, preset: Preset, chunk: int = 256) -> None:
    """Whole-clip log-mels of the cached audio (frames past a clip's end hold silence)."""
    import torch

    from selavi_core.model.logmel import frame_count, log_mel

    audio = np.load(cache_dir / "audio.npy", mmap_mode="r")
    spec = preset.audio
    f_max = frame_count(audio.shape[1], spec)
    out = np.lib.format.open_memmap(
        cache_dir / "logmel.npy", mode="w+", dtype=np.float32, shape=(len(audio), spec.n_mels, f_max)
    )
    starts = range(0, len(audio), chunk)
    for i in progress(starts, total=len(starts), desc="log-mel cache", unit="chunk"):
        wave = torch.from_numpy(np.asarray(audio[i : i + chunk], dtype=np.float32))
        out[i : i + chunk] = log_mel(wave, spec, dtype=torch.float32)[:, 0].numpy()
    out.flush()
