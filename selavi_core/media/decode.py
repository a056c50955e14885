"""Decode a time window of a clip into uint8 RGB frames and mono float32 audio, in-process.

One PyAV container per call and no subprocess per clip: the CLI route costs ~100 ms of process
start-up per call on this machine, which is more than the decode itself (perf-baselines §6).

Timing model (the same for frames and audio): t = 0 is the file's first video frame. The window
[start, end) is sampled at ``fps``; output frame i is the source frame *shown* at ``start + i/fps``
(the last one whose timestamp is <= that time), so a 25 fps source resampled to 30 fps repeats
frames and a 60 fps source skips them, exactly as a player would show them. Audio is down-mixed,
resampled and cut to exactly ``round((end - start) * sample_rate)`` samples.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import overload

import av
import numpy as np
from av.audio.stream import AudioStream
from av.container import InputContainer
from av.video.stream import VideoStream

from selavi_core.errors import TruncatedMedia
from selavi_core.media.probe import (
    FFmpegError,
    audio_stream,
    display_size,
    ffmpeg_message,
    header_duration,
    open_media,
    scan_duration,
    stream_fps,
    time_origin,
    video_stream,
)

#: A frame whose timestamp is within this of a sample time counts as shown at that time (float noise).
_EPS_S = 1e-4
#: Video seeks aim this much before the window (timestamp rounding must not skip a keyframe at start).
_SEEK_MARGIN_S = 1e-3
#: Audio decoding starts this long before the window so the decoder's overlap (MDCT) state is warm.
_AUDIO_PREROLL_S = 0.1
#: When a seek lands after the wanted time (sparse index), try again this much earlier, then at 0.
_SEEK_BACKOFF_S = (2.0, 10.0)


@dataclass
class Clip:
    """Decoded window. ``frames`` (T, H, W, 3) uint8 RGB; ``audio`` (S,) float32 mono in [-1, 1].

    ``has_audio`` is False when the file has no (decodable) audio stream: ``audio`` is then silence.
    ``n_decoded`` counts source video frames actually decoded (diagnostic: a late window in a long
    file should not decode the whole file).
    """

    frames: np.ndarray
    audio: np.ndarray
    sample_rate: int
    fps: float
    has_audio: bool
    start_s: float
    end_s: float
    n_decoded: int = 0


def target_geometry(
    src_w: int, src_h: int, short_side: int | None = None, size: tuple[int, int] | None = None
) -> tuple[int, int, int, int, int, int]:
    """(scaled_w, scaled_h, crop_x, crop_y, out_w, out_h) for a source of ``src_w`` x ``src_h``.

    ``size=(W, H)`` scales the source to cover W x H with its aspect kept, then takes the centre
    W x H (at most a sliver is lost when the aspects match). ``short_side`` scales so the shorter side
    has that length, aspect kept. Neither: the source's display size.
    """
    if size is not None:
        out_w, out_h = int(size[0]), int(size[1])
        if out_w <= 0 or out_h <= 0:
            raise ValueError(f"size must be positive, got {size}")
        scale = max(out_w / src_w, out_h / src_h)
        sw, sh = max(out_w, round(src_w * scale)), max(out_h, round(src_h * scale))
        return sw, sh, (sw - out_w) // 2, (sh - out_h) // 2, out_w, out_h
    if short_side is not None:
        if short_side <= 0:
            raise ValueError(f"short_side must be positive, got {short_side}")
        scale = short_side / min(src_w, src_h)
        sw, sh = max(1, round(src_w * scale)), max(1, round(src_h * scale))
        if src_w <= src_h:
            sw = short_side
        else:
            sh = short_side
        return sw, sh, 0, 0, sw, sh
    return src_w, src_h, 0, 0, src_w, src_h


def _frame_time(frame: av.frame.Frame, fallback: float) -> float:
    t = frame.time
    return float(t) if t is not None else fallback


def _seek(container: InputContainer, stream: VideoStream | AudioStream, t_file: float) -> None:
    """Seek to the keyframe at or before file time ``t_file`` (seconds) of ``stream``."""
    if t_file <= 0 or stream.time_base is None:
        container.seek(0, backward=True, any_frame=False)
    else:
        container.seek(int(t_file / stream.time_base), backward=True, any_frame=False, stream=stream)


def _seek_plan(start: float, margin: float) -> list[float | None]:
    """Seek targets (relative seconds) to try in turn; ``None`` means read from where the file starts."""
    if start - margin <= 0:
        return [None]
    plan: list[float | None] = [start - margin]
    plan += [start - b for b in _SEEK_BACKOFF_S if start - b > 0]
    return [*plan, 0.0]


@overload
def _decoded(container: InputContainer, stream: VideoStream) -> Iterator[av.VideoFrame]: ...
@overload
def _decoded(container: InputContainer, stream: AudioStream) -> Iterator[av.AudioFrame]: ...
def _decoded(container: InputContainer, stream: VideoStream | AudioStream) -> Iterator[av.VideoFrame | av.AudioFrame]:
    """Frames of ``stream`` from the current position; damaged packets are skipped, a damaged tail ends it."""
    try:
        for packet in container.demux(stream):
            try:
                # a video (audio) stream's packets decode to video (audio) frames; PyAV's overloads of demux
                # cannot follow a union of stream types, so they promise subtitles too
                yield from packet.decode()  # type: ignore[misc]
            except FFmpegError:
                continue
    except FFmpegError:
        return


class _Overshoot(Exception):
    """A seek landed after the wanted time: the caller retries from earlier."""


def iter_window_frames(
    container: InputContainer,
    vstream: VideoStream,
    origin: float,
    start: float,
    n_out: int,
    fps: float,
    path: str,
    stats: dict[str, int] | None = None,
    *,
    fresh: bool = True,
) -> Iterator[tuple[int, av.VideoFrame]]:
    """Yield (i, frame) for i in 0..n_out-1: the source frame shown at ``start + i / fps``.

    Repeated slots yield the same frame object (callers convert each object once). Seeks once to
    the keyframe before ``start``; if that lands late, seeks earlier before anything is yielded.
    Raises ``TruncatedMedia`` when no frame decodes. ``fresh=False`` says the container has already
    been read from (so even a window at 0 needs a seek).
    """
    src_fps = stream_fps(vstream) or fps
    targets = start + np.arange(n_out) / fps
    stats = {} if stats is None else stats
    stats.setdefault("decoded", 0)
    plan = _seek_plan(start, _SEEK_MARGIN_S)
    for attempt, seek_to in enumerate(plan):
        if seek_to is not None or not fresh:
            try:
                _seek(container, vstream, origin + (seek_to or 0.0))
            except FFmpegError:
                continue
        prev: av.VideoFrame | None = None
        i, t_prev = 0, start
        try:
            for frame in _decoded(container, vstream):
                stats["decoded"] += 1
                t = _frame_time(frame, t_prev + 1.0 / src_fps + origin) - origin
                t_prev = t
                if prev is None and i == 0 and t > targets[0] + _EPS_S and seek_to and attempt + 1 < len(plan):
                    raise _Overshoot
                while i < n_out and t > targets[i] + _EPS_S:
                    yield i, (prev if prev is not None else frame)
                    i += 1
                if i >= n_out:
                    return
                prev = frame
        except _Overshoot:
            continue
        if prev is None:
            break
        while i < n_out:  # the source ended early: hold its last frame
            yield i, prev
            i += 1
        return
    raise TruncatedMedia(path, "truncated: decoded 0 frames")


def decode_audio_window(
    container: InputContainer,
    astream: AudioStream,
    origin: float,
    start: float,
    end: float,
    sample_rate: int,
    *,
    fresh: bool = True,
) -> np.ndarray:
    """Exactly ``round((end - start) * sample_rate)`` mono float32 samples of the window.

    Decoding starts a little before ``start`` and stops just after ``end``; the decoded stream is
    placed by its first frame's timestamp (FFmpeg has already dropped AAC/Opus priming), then cut.
    Anything the file lacks (audio starting late, ending early, AAC end padding past ``end``) is
    silence or is cut away. ``fresh=False`` says the container has already been read from.
    """
    n = int(round((end - start) * sample_rate))
    out = np.zeros(n, dtype=np.float32)
    for seek_to in _seek_plan(start, _AUDIO_PREROLL_S):
        if seek_to is not None or not fresh:
            try:
                _seek(container, astream, origin + (seek_to or 0.0))
            except FFmpegError:
                continue
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks: list[np.ndarray] = []
        t0: float | None = None
        total = 0
        for frame in _decoded(container, astream):
            if t0 is None:
                t0 = _frame_time(frame, origin) - origin
                if seek_to and t0 > start + 1.0 / sample_rate:
                    break  # landed late: retry from earlier
            frame.pts = None  # the resampler must not insert silence for timestamp jitter
            for o in resampler.resample(frame):
                chunks.append(o.to_ndarray().reshape(-1))
                total += o.samples
            if t0 + total / sample_rate >= end + _AUDIO_PREROLL_S:
                break
        else:
            for o in resampler.resample(None):
                chunks.append(o.to_ndarray().reshape(-1))
                total += o.samples
        if t0 is None:
            return out  # the audio stream yields nothing: silence
        if seek_to and t0 > start + 1.0 / sample_rate:
            continue
        samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        offset = int(round((start - t0) * sample_rate))
        src_lo, dst_lo = max(offset, 0), max(-offset, 0)
        take = max(0, min(n - dst_lo, len(samples) - src_lo))
        out[dst_lo : dst_lo + take] = samples[src_lo : src_lo + take]
        np.clip(out, -1.0, 1.0, out=out)
        return out
    return out


def decode_clip(
    path: str | os.PathLike,
    start_s: float = 0.0,
    end_s: float | None = None,
    *,
    fps: float | None = None,
    short_side: int | None = None,
    size: tuple[int, int] | None = None,
    sample_rate: int = 24_000,
    video: bool = True,
    audio: bool = True,
) -> Clip:
    """Decode [start_s, end_s) of ``path``; ``end_s=None`` means to the end of the video stream.

    Frames: ``round((end - start) * fps)`` of them (at least one), ``fps`` defaulting to the
    source's; resized by ``short_side`` or to exactly ``size=(W, H)`` (see ``target_geometry``).
    Audio: mono float32 at ``sample_rate``, exactly ``round((end - start) * sample_rate)`` samples,
    silence with ``has_audio=False`` when the file has no audio. ``video=False`` / ``audio=False``
    skip that modality (its array is then empty). Raises ``MediaError`` subclasses for bad files.
    """
    path = str(path)
    if start_s < 0:
        raise ValueError(f"start_s must be >= 0, got {start_s}")
    if end_s is not None and end_s <= start_s:
        raise ValueError(f"end_s ({end_s}) must be after start_s ({start_s})")
    stats: dict[str, int] = {"decoded": 0}
    with open_media(path) as container:
        vstream = video_stream(container, path)
        astream = audio_stream(container)
        origin = time_origin(container, vstream)
        out_fps = float(fps) if fps else (stream_fps(vstream) or 30.0)
        if out_fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        end = end_s
        if end is None:
            end = header_duration(container, vstream)
            if end is None:
                end = scan_duration(path)
            if end is None or end <= start_s:
                raise TruncatedMedia(path, f"truncated: nothing after {start_s:.3f} s")
        try:
            if video:
                frames = _decode_frames(
                    container, vstream, origin, start_s, end, out_fps, short_side, size, path, stats
                )
            else:
                frames = np.zeros((0, 0, 0, 3), dtype=np.uint8)
            if not audio:
                samples = np.zeros(0, dtype=np.float32)
            elif astream is None:
                samples = np.zeros(int(round((end - start_s) * sample_rate)), dtype=np.float32)
            else:
                samples = decode_audio_window(container, astream, origin, start_s, end, sample_rate, fresh=not video)
        except FFmpegError as err:
            raise TruncatedMedia(path, f"truncated or corrupt: {ffmpeg_message(err)}") from None
    return Clip(
        frames=frames,
        audio=samples,
        sample_rate=sample_rate,
        fps=out_fps,
        has_audio=astream is not None,
        start_s=float(start_s),
        end_s=float(end),
        n_decoded=stats["decoded"],
    )


def _decode_frames(
    container: InputContainer, vstream: VideoStream, origin: float, start: float, end: float, fps: float,
    short_side: int | None, size: tuple[int, int] | None, path: str, stats: dict[str, int],
) -> np.ndarray:  # fmt: skip
    n_out = max(1, int(round((end - start) * fps)))
    src_w, src_h = display_size(vstream)
    if src_w <= 0 or src_h <= 0:  # some streams only learn their size from the first frame
        src_w, src_h = 0, 0
    out: np.ndarray | None = None
    last_obj, last_arr = None, None
    geometry = None
    for i, frame in iter_window_frames(container, vstream, origin, start, n_out, fps, path, stats):
        if frame is not last_obj:
            if geometry is None:
                w, h = (src_w, src_h) if src_w else (frame.width, frame.height)
                geometry = target_geometry(w, h, short_side, size)
                sw, sh, cx, cy, ow, oh = geometry
                out = np.empty((n_out, oh, ow, 3), dtype=np.uint8)
            rgb = frame.reformat(width=sw, height=sh, format="rgb24", interpolation="AREA").to_ndarray()
            last_obj, last_arr = frame, rgb[cy : cy + oh, cx : cx + ow]
        assert out is not None  # allocated at the first frame
        out[i] = last_arr
    assert out is not None  # iter_window_frames yields n_out >= 1 items or raises
    return out
