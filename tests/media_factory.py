"""Real media files for tests and benchmarks, written with PyAV (no pytest, no subprocess).

Every file is encoded for real by PyAV's bundled FFmpeg, so tests exercise the same demuxers and
decoders that user files go through. The content is deterministic and *checkable*:

- video frame ``i`` is exactly ``synth_frame(i, ...)`` before encoding: a scrolling colour gradient,
  a square moving along a Lissajous path and a grey "code" bar whose level changes every frame, so a
  decoded frame can be matched back to the source frame it came from (see ``nearest_source_frame``);
- the audio is ``synth_audio(...)``: a linear chirp plus a little noise, so a window of decoded audio
  lines up with exactly one offset of the source (a fixed tone would hide an off-by-1024 error).

``make_bad_media_folder`` builds the folder of good and broken files that ingest and probe tests use.
"""

from __future__ import annotations

import functools
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

#: Container format (as PyAV / FFmpeg name it) and default codecs per file suffix.
SUFFIX_DEFAULTS: dict[str, tuple[str, str | None, str | None]] = {
    ".mp4": ("mp4", "h264", "aac"),
    ".m4v": ("mp4", "h264", "aac"),
    ".m4a": ("ipod", None, "aac"),
    ".mov": ("mov", "h264", "aac"),
    ".mkv": ("matroska", "h264", "aac"),
    ".webm": ("webm", "vp9", "opus"),
    ".avi": ("avi", "mpeg4", "mp3"),
}

#: Encoder to use for a codec name, and the pixel format it is fed.
_VIDEO_ENCODERS = {
    "h264": ("libx264", "yuv420p", {"preset": "veryfast", "crf": "23"}),
    "vp9": ("libvpx-vp9", "yuv420p", {"deadline": "realtime", "cpu-used": "8", "crf": "32", "b": "0"}),
    "mpeg4": ("mpeg4", "yuv420p", {"qscale": "4"}),
    "mjpeg": ("mjpeg", "yuvj420p", {}),
}
_AUDIO_ENCODERS = {"aac": "aac", "opus": "libopus", "mp3": "libmp3lame", "pcm_s16le": "pcm_s16le"}


def synth_frame(i: int, size: tuple[int, int] = (160, 120), seed: int = 0, noise: float = 0.0) -> np.ndarray:
    """The RGB uint8 (H, W, 3) frame ``i`` of a synthetic clip: smooth, moving, different every frame."""
    w, h = size
    rng = np.random.default_rng(seed)
    hue = rng.uniform(0.3, 1.0, size=3)
    x = np.arange(w, dtype=np.float32)[None, :]
    y = np.arange(h, dtype=np.float32)[:, None]
    phase = 2 * np.pi * (x + 3.0 * i) / max(w, 1)
    base = 0.5 + 0.35 * np.sin(phase + np.array([0.0, 2.1, 4.2])[:, None, None] + y / max(h, 1))
    img = (base * hue[:, None, None]).transpose(1, 2, 0)
    # a square moving along a Lissajous curve
    side = max(4, min(w, h) // 4)
    cx = int((w - side) * (0.5 + 0.45 * np.sin(0.21 * i + seed)))
    cy = int((h - side) * (0.5 + 0.45 * np.sin(0.13 * i + 2 * seed)))
    img[cy : cy + side, cx : cx + side] = (1.0, 1.0, 1.0) if seed % 2 == 0 else (0.05, 0.05, 0.05)
    # a grey code bar along the top whose level steps every frame (cycle of 24 frames)
    bar = max(2, h // 10) // 2 * 2
    img[:bar, :] = (16 + 9 * (i % 24)) / 255.0
    out = np.clip(img * 255.0, 0, 255)
    if noise > 0:
        out = np.clip(out + np.random.default_rng([seed, i]).normal(0, noise, out.shape), 0, 255)
    return out.astype(np.uint8)


def synth_audio(n_samples: int, sample_rate: int = 24_000, seed: int = 0, channels: int = 1) -> np.ndarray:
    """(channels, n_samples) float32 in [-1, 1]: a chirp (300 Hz rising 400 Hz per second) and light noise."""
    t = np.arange(n_samples, dtype=np.float64) / sample_rate
    f0, k = 300.0 + 40.0 * (seed % 5), 400.0
    sig = 0.4 * np.sin(2 * np.pi * (f0 * t + 0.5 * k * t * t))
    sig += np.random.default_rng(seed + 1000).normal(0, 0.01, n_samples)
    out = np.repeat(sig[None, :], channels, axis=0)
    if channels > 1:  # make channels differ a little so a down-mix is not trivially channel 0
        out[1:] *= 0.8
    return out.astype(np.float32)


def _rate(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


def make_video(
    path: str | os.PathLike,
    *,
    vcodec: str | None = "default",
    acodec: str | None = "default",
    duration: float = 2.0,
    fps: float = 25,
    size: tuple[int, int] = (160, 120),
    sample_rate: int = 24_000,
    channels: int = 1,
    seed: int = 0,
    noise: float = 0.0,
    gop: int | None = None,
    container: str | None = None,
    faststart: bool = False,
) -> Path:
    """Encode a real clip at ``path``; the container comes from the suffix unless ``container`` is given.

    ``vcodec``/``acodec`` default to the suffix's usual pair (see ``SUFFIX_DEFAULTS``); pass ``None``
    to leave that stream out (``vcodec=None`` gives an audio-only file). Frames are
    ``synth_frame(i, size, seed, noise)`` at ``pts = i / fps``; audio is ``synth_audio``.
    ``faststart`` puts an MP4's moov atom first (by default it is written at the end).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt, dv, da = SUFFIX_DEFAULTS.get(path.suffix.lower(), (None, "h264", "aac"))
    vcodec = dv if vcodec == "default" else vcodec
    acodec = da if acodec == "default" else acodec
    if vcodec is None and acodec is None:
        raise ValueError("a file needs at least one stream")
    n_frames = int(round(duration * fps))
    n_samples = int(round(duration * sample_rate))

    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", format=container or fmt, options=options) as out:
        vstream = astream = None
        if vcodec is not None:
            enc, pix_fmt, opts = _VIDEO_ENCODERS.get(vcodec, (vcodec, "yuv420p", {}))
            vstream = out.add_stream(enc, rate=_rate(fps), options=dict(opts))
            vstream.width, vstream.height = size
            vstream.pix_fmt = pix_fmt
            if gop:
                vstream.codec_context.gop_size = gop
            if vcodec == "mjpeg":
                vstream.codec_context.color_range = 2  # full range, as yuvj420p implies
        if acodec is not None:
            astream = out.add_stream(_AUDIO_ENCODERS.get(acodec, acodec), rate=sample_rate)
            astream.layout = "mono" if channels == 1 else "stereo"

        audio = synth_audio(n_samples, sample_rate, seed, channels) if astream is not None else None
        chunk = 1024
        packets: list[av.Packet] = []
        a_pos = 0
        for i in range(n_frames if vstream is not None else 0):
            a_until = min(n_samples, int(round((i + 1) / fps * sample_rate)))
            while astream is not None and a_pos < a_until:
                a_pos = _push_audio(packets, astream, audio, a_pos, min(a_pos + chunk, a_until), sample_rate)
            frame = av.VideoFrame.from_ndarray(synth_frame(i, size, seed, noise), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1) / _rate(fps)
            packets += vstream.encode(frame)
        while astream is not None and a_pos < n_samples:
            a_pos = _push_audio(packets, astream, audio, a_pos, min(a_pos + chunk, n_samples), sample_rate)
        if vstream is not None:
            packets += vstream.encode(None)
        if astream is not None:
            packets += astream.encode(None)
        # Mux in time order only once everything is encoded: audio encoders emit their first (negative-
        # time, priming) packets late, and muxers that shift negative timestamps (AVI) would otherwise
        # shift the video frames already written differently from the rest.
        if out.format.name == "avi":  # AVI cannot store a negative start: start the audio (priming and all) at 0
            _shift_to_zero([p for p in packets if astream is not None and p.stream is astream])
        packets.sort(key=lambda p: float((p.dts if p.dts is not None else p.pts) * p.time_base))
        for packet in packets:
            out.mux(packet)
    return path


def _shift_to_zero(packets: list[av.Packet]) -> None:
    first = min((p.dts if p.dts is not None else p.pts for p in packets), default=0)
    if first < 0:
        for p in packets:
            p.pts = None if p.pts is None else p.pts - first
            p.dts = None if p.dts is None else p.dts - first


def _push_audio(packets: list, stream, audio: np.ndarray, start: int, stop: int, sample_rate: int) -> int:
    pcm = np.round(audio[:, start:stop] * 32767).astype(np.int16)
    layout = "mono" if pcm.shape[0] == 1 else "stereo"
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm.T.reshape(1, -1)), format="s16", layout=layout)
    frame.sample_rate = sample_rate
    frame.pts = start
    frame.time_base = Fraction(1, sample_rate)
    packets += stream.encode(frame)
    return stop


@functools.lru_cache(maxsize=2048)
def _reference(i: int, size: tuple[int, int], seed: int, w: int, h: int) -> np.ndarray:
    src = av.VideoFrame.from_ndarray(synth_frame(i, size, seed), format="rgb24")
    return src.reformat(width=w, height=h, format="rgb24").to_ndarray().astype(np.float32)


def nearest_source_frame(decoded: np.ndarray, n_source: int, size: tuple[int, int] = (160, 120), seed: int = 0) -> int:
    """Index of the source frame (0..n_source-1) closest to ``decoded`` (H, W, 3), compared at its size."""
    h, w = decoded.shape[:2]
    best, best_err = -1, np.inf
    for i in range(n_source):
        err = float(np.mean((_reference(i, tuple(size), seed, w, h) - decoded.astype(np.float32)) ** 2))
        if err < best_err:
            best, best_err = i, err
    return best


#: Expected outcome per bad-folder file: "ok" or a substring of the MediaError reason.
OK = "ok"


def make_bad_media_folder(root: str | os.PathLike) -> dict[str, str]:
    """Write good and broken media under ``root``; return {path relative to root: expected keyword}.

    The keyword is ``"ok"`` for files that probe and decode, else a substring of the error's
    ``reason``: ``"no video stream"``, ``"empty file"``, ``"truncated"``, ``"not a media file"``,
    ``"unsupported codec"``.
    Every file has a suffix from ``config.VIDEO_SUFFIXES`` so a folder walk picks it up.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    expected: dict[str, str] = {}

    def add(rel: str, keyword: str) -> Path:
        expected[rel] = keyword
        return root / rel

    make_video(add("ok_h264_aac.mp4", OK), seed=1)
    make_video(add("ok_vp9_opus.webm", OK), seed=2)
    make_video(add("ok_h264_aac.mkv", OK), seed=3)
    make_video(add("ok_h264_aac.mov", OK), seed=4)
    make_video(add("ok_mpeg4_mp3.avi", OK), seed=5)
    make_video(add("no_audio.mp4", OK), acodec=None, seed=6)
    make_video(add("audio_only.mp4", "no video stream"), vcodec=None)

    full = make_video(root / ".truncated_full.mp4", seed=7)  # moov atom at the end (no faststart)
    data = full.read_bytes()
    full.unlink()
    add("truncated.mp4", "truncated").write_bytes(data[: int(len(data) * 0.3)])

    # An H.264 MP4 relabelled as MPEG-5 EVC ('evc1'), a codec PyAV's FFmpeg knows but cannot decode.
    plain = make_video(root / ".plain.mp4", acodec=None, seed=9)
    data = plain.read_bytes()
    plain.unlink()
    add("unsupported_codec.mp4", "unsupported codec").write_bytes(data.replace(b"avc1", b"evc1"))

    # Headers promise 2 s but the data stops early (the first frames still decode).
    for name, kwargs in (("truncated_tail.mkv", {}), ("truncated_faststart.mp4", {"faststart": True})):
        whole = make_video(root / f".whole{Path(name).suffix}", seed=10, **kwargs)
        data = whole.read_bytes()
        whole.unlink()
        add(name, "truncated").write_bytes(data[: int(len(data) * 0.4)])

    # Matroska headers and the start of the first cluster, but no whole frame.
    whole = make_video(root / ".whole.mkv", seed=11)
    data = whole.read_bytes()
    whole.unlink()
    add("header_only.mkv", "truncated").write_bytes(data[: data.find(bytes.fromhex("1f43b675")) + 40])

    add("empty.mp4", "empty file").write_bytes(b"")
    add("text.mp4", "not a media file").write_text("this is not a video, just some words\n" * 20)
    make_video(add("vidéo_日本/clip ü.mp4", OK), seed=8)
    return expected
