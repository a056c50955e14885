"""Browser previews: one short H.264/AAC MP4 and one poster JPEG per clip window.

Browsers play H.264 + AAC in MP4 reliably only as yuv420p, at a constant frame rate, with the moov
atom before the media data (``+faststart``) so playback starts before the file has fully loaded
(browser-testing.md, "Media serving facts"). Grids show posters; one player at a time plays an MP4.

Files are named by a content key, so a preview is built once and reused as long as the source
file and the window are unchanged, and a renamed or moved source does not force a rebuild.
Every file is written under a temporary name and renamed into place: an interrupted build never
leaves a half file that a later run would take as complete.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from selavi_core.config import PREVIEW, PreviewSpec, default_workers
from selavi_core.errors import MediaError, TruncatedMedia
from selavi_core.io import atomic_write
from selavi_core.media.decode import decode_audio_window, iter_window_frames, target_geometry
from selavi_core.media.probe import (
    FFmpegError,
    audio_stream,
    check_file,
    display_size,
    ffmpeg_message,
    open_media,
    time_origin,
    video_stream,
)
from selavi_core.progress import progress

#: Bump when the encoding recipe changes in a way PreviewSpec does not capture: old previews rebuild.
RECIPE_VERSION = 1
#: x264 speed/size trade-off for previews (a name, not a number: small clips encode in milliseconds).
X264_PRESET = "veryfast"
_EDGE_BYTES = 64 * 1024


@dataclass(frozen=True)
class PreviewFiles:
    mp4: Path
    poster: Path


def _edge_hash(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(_EDGE_BYTES))
        if size > _EDGE_BYTES:
            f.seek(max(_EDGE_BYTES, size - _EDGE_BYTES))
            h.update(f.read(_EDGE_BYTES))
    return h.hexdigest()


def preview_key(path: str | os.PathLike, start_s: float, end_s: float, spec: PreviewSpec = PREVIEW) -> str:
    """A key that changes when the file's bytes (size, mtime, first/last 64 KiB), the window or the recipe do.

    Reading only the edges keeps this cheap for large files; size + mtime catch edits in the middle.
    """
    p = Path(path)
    st = p.stat()
    parts = [
        str(st.st_size),
        str(st.st_mtime_ns),
        _edge_hash(p, st.st_size),
        f"{float(start_s):.3f}",
        f"{float(end_s):.3f}",
        repr(sorted(asdict(spec).items())),
        f"{RECIPE_VERSION}/{X264_PRESET}",
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


def _preview_size(src_w: int, src_h: int, spec: PreviewSpec) -> tuple[int, int]:
    """(W, H): short side ``spec.short_side`` (never upscaled), aspect kept, both even (yuv420p needs it)."""
    short = min(spec.short_side, min(src_w, src_h))
    scale = short / min(src_w, src_h)
    return _even(src_w * scale), _even(src_h * scale)


def _encode(src: str, start_s: float, end_s: float, mp4_tmp: Path, jpg_tmp: Path, spec: PreviewSpec) -> None:
    with open_media(src) as container:
        vstream = video_stream(container, src)
        astream = audio_stream(container)
        origin = time_origin(container, vstream)
        src_w, src_h = display_size(vstream)
        out_w, out_h = _preview_size(src_w, src_h, spec)
        sw, sh, cx, cy, _, _ = target_geometry(src_w, src_h, size=(out_w, out_h))
        n_out = max(1, int(round((end_s - start_s) * spec.fps)))

        samples = None
        if astream is not None:
            samples = decode_audio_window(container, astream, origin, start_s, end_s, spec.audio_rate)

        with av.open(str(mp4_tmp), "w", format="mp4", options={"movflags": "+faststart"}) as out:
            vout = out.add_stream("libx264", rate=spec.fps, options={"crf": str(spec.crf), "preset": X264_PRESET})
            vout.width, vout.height, vout.pix_fmt = out_w, out_h, "yuv420p"
            vout.codec_context.gop_size = 2 * spec.fps
            vout.codec_context.thread_count = 1  # previews build in parallel: one thread per encoder
            audio_packets: list[av.Packet] = []
            if samples is not None:
                aout = out.add_stream("aac", rate=spec.audio_rate)
                aout.layout = "mono"
                aout.bit_rate = spec.audio_bitrate
                audio_packets = _encode_audio(aout, samples, spec.audio_rate)

            poster_slot = n_out // 2
            a_next = 0
            last_obj, last_yuv = None, None
            for i, frame in iter_window_frames(
                container, vstream, origin, start_s, n_out, spec.fps, src, fresh=samples is None
            ):
                if frame is not last_obj:
                    rgb = frame.reformat(width=sw, height=sh, format="rgb24", interpolation="AREA").to_ndarray()
                    rgb = np.ascontiguousarray(rgb[cy : cy + out_h, cx : cx + out_w])
                    last_obj, last_yuv = (
                        frame,
                        av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p"),
                    )
                    if i <= poster_slot:
                        poster_rgb = rgb
                last_yuv.pts = i
                last_yuv.time_base = Fraction(1, spec.fps)
                t = i / spec.fps
                # interleave: audio up to this frame's time, so a browser can play while downloading
                while (
                    a_next < len(audio_packets)
                    and float(audio_packets[a_next].pts * audio_packets[a_next].time_base) <= t
                ):
                    out.mux(audio_packets[a_next])
                    a_next += 1
                out.mux(vout.encode(last_yuv))
            out.mux(vout.encode(None))
            for packet in audio_packets[a_next:]:
                out.mux(packet)

    Image.fromarray(poster_rgb).save(jpg_tmp, format="JPEG", quality=spec.poster_quality)


def _encode_audio(stream, samples: np.ndarray, rate: int) -> list[av.Packet]:
    packets: list[av.Packet] = []
    chunk = 1024
    for lo in range(0, len(samples), chunk):
        block = np.ascontiguousarray(samples[lo : lo + chunk], dtype=np.float32).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(block, format="flt", layout="mono")
        frame.sample_rate = rate
        frame.pts = lo
        frame.time_base = Fraction(1, rate)
        packets += stream.encode(frame)
    packets += stream.encode(None)
    return packets


def ensure_preview(
    path: str | os.PathLike, start_s: float, end_s: float, out_dir: str | os.PathLike, spec: PreviewSpec = PREVIEW
) -> PreviewFiles:
    """The preview MP4 and poster JPEG of [start_s, end_s) of ``path`` in ``out_dir``, built if missing.

    Raises ``MediaError`` subclasses for bad sources (nothing is left behind in ``out_dir`` then).
    """
    src = str(path)
    check_file(src)
    out_dir = Path(out_dir)
    key = preview_key(src, start_s, end_s, spec)
    files = PreviewFiles(mp4=out_dir / f"{key}.mp4", poster=out_dir / f"{key}.jpg")
    if _complete(files.mp4) and _complete(files.poster):
        return files
    out_dir.mkdir(parents=True, exist_ok=True)
    # the poster is renamed into place last: both present means both complete. A preview can be rebuilt,
    # so it is not fsynced (thousands of small files); ``_complete`` refuses an empty one.
    with atomic_write(files.poster, durable=False) as jpg_tmp, atomic_write(files.mp4, durable=False) as mp4_tmp:
        try:
            _encode(src, start_s, end_s, mp4_tmp, jpg_tmp, spec)
        except FFmpegError as err:
            raise TruncatedMedia(src, f"truncated or corrupt: {ffmpeg_message(err)}") from None
    return files


def _complete(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def build_previews(
    items: Iterable[tuple[str | os.PathLike, float, float]],
    out_dir: str | os.PathLike,
    workers: int | None = None,
    spec: PreviewSpec = PREVIEW,
) -> list[PreviewFiles | MediaError]:
    """``ensure_preview`` for every (path, start_s, end_s), in parallel; results in input order.

    Threads, not processes: PyAV releases the GIL while it decodes, scales and encodes, and
    threads need no pickling. A bad source gives its ``MediaError`` in place of a result.
    """
    items = list(items)
    workers = default_workers() if workers is None else max(1, int(workers))
    results: list[PreviewFiles | MediaError | None] = [None] * len(items)

    def one(k: int) -> PreviewFiles | MediaError:
        path, start, end = items[k]
        try:
            return ensure_preview(path, start, end, out_dir, spec)
        except MediaError as err:
            return err

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(one, k): k for k in range(len(items))}
        for fut in progress(as_completed(futures), total=len(futures), desc="previews", unit="clip"):
            results[futures[fut]] = fut.result()
    return results  # type: ignore[return-value]
