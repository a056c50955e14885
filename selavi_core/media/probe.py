"""Probe a media file: what it holds, and whether it really decodes.

``probe`` opens the container with PyAV (FFmpeg in-process, no subprocess) and decodes the first
video frame, so that a truncated or corrupt file is rejected when the catalog is built rather than
hours later inside a training loop. Every failure is a typed ``MediaError`` with a short reason.

The helpers here (opening, stream choice, durations, time origin) are shared with ``decode``.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import av
import av.error

from selavi_core.errors import (
    EmptyFile,
    MediaError,
    MediaNotFound,
    NotMedia,
    NoVideoStream,
    TruncatedMedia,
    UnsupportedCodec,
)

#: FFmpeg's own errors (InvalidDataError, EOFError, ...) all derive from this.
FFmpegError = av.error.FFmpegError

#: First bytes of the containers we know; a file that starts like one but does not open is truncated
#: or corrupt, not "not media".
_SIGNATURES: tuple[tuple[int, bytes], ...] = (
    *((4, box) for box in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")),  # MP4 / MOV boxes
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska / WebM (EBML)
    (0, b"RIFF"),  # AVI
    (0, b"OggS"),  # Ogg
    (0, b"FLV"),
    (0, b"\x00\x00\x01\xba"),  # MPEG-PS
    (0, b"\x30\x26\xb2\x75"),  # ASF / WMV
)


#: probe accepts a file whose video data ends this close to the duration its headers state.
_TAIL_TOLERANCE_S = 0.5
_TAIL_TOLERANCE_FRACTION = 0.05


@dataclass(frozen=True)
class MediaInfo:
    """What ``probe`` found. Times are seconds from the first video frame; ``n_frames`` may be unknown."""

    path: str
    container: str
    duration_s: float
    fps: float
    width: int
    height: int
    video_codec: str
    n_frames: int | None
    has_audio: bool
    audio_codec: str | None
    audio_rate: int | None
    audio_channels: int | None
    pix_fmt: str | None = None  # the first frame's pixel format (browsers decode H.264 only as 4:2:0 8-bit)


def ffmpeg_message(err: BaseException) -> str:
    """FFmpeg's sentence without the errno and the (possibly long) file name PyAV appends."""
    msg = getattr(err, "strerror", None) or str(err)
    return str(msg).strip().rstrip(".")


def _looks_like_media(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    if any(head[off : off + len(sig)] == sig for off, sig in _SIGNATURES):
        return True
    return len(head) > 0 and head[0] == 0x47 and path.stat().st_size % 188 == 0  # MPEG-TS sync byte


def check_file(path: str | os.PathLike) -> Path:
    """The path, if it names a non-empty regular file; else the matching ``MediaError``."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise MediaNotFound(str(p)) from None
    except OSError as err:
        raise MediaError(str(p), f"cannot read: {err.strerror or err}") from None
    if not p.is_file():
        raise NotMedia(str(p), "not a media file: not a regular file")
    if st.st_size == 0:
        raise EmptyFile(str(p))
    return p


def open_media(path: str | os.PathLike) -> av.container.InputContainer:
    """Open ``path`` for reading, turning every failure into a typed ``MediaError``.

    A file that starts like a known container but cannot be opened (an MP4 cut before its moov
    atom, say) is ``TruncatedMedia``; anything else that FFmpeg rejects is ``NotMedia``.
    """
    p = check_file(path)
    try:
        return av.open(str(p), mode="r", metadata_errors="replace")
    except PermissionError:
        raise MediaError(str(p), "cannot read: permission denied") from None
    except (FFmpegError, OSError, UnicodeDecodeError, ValueError) as err:
        if _looks_like_media(p):
            raise TruncatedMedia(str(p), f"truncated or corrupt: {ffmpeg_message(err)}") from None
        raise NotMedia(str(p), f"not a media file: {ffmpeg_message(err)}") from None


def video_stream(container: av.container.InputContainer, path: str) -> av.video.stream.VideoStream:
    """The first real video stream (cover art, i.e. an attached picture, does not count)."""
    for stream in container.streams.video:
        if stream.disposition & av.stream.Disposition.attached_pic:
            continue
        if stream.codec_context is None:
            raise UnsupportedCodec(path, "unknown (no decoder in FFmpeg)")
        return stream
    raise NoVideoStream(path)


def audio_stream(container: av.container.InputContainer) -> av.audio.stream.AudioStream | None:
    """The first decodable audio stream, if any (one FFmpeg cannot decode counts as none)."""
    for stream in container.streams.audio:
        if stream.codec_context is not None:
            return stream
    return None


def time_origin(container: av.container.InputContainer, vstream: av.video.stream.VideoStream) -> float:
    """Seconds of the first video frame in the file's clock: every time we report is relative to it.

    Most files start at 0, but MPEG-TS and cut files often do not; audio is measured against the
    same origin so that the two stay in sync.
    """
    if vstream.start_time is not None and vstream.time_base is not None:
        return float(vstream.start_time * vstream.time_base)
    if container.start_time is not None:
        return container.start_time / av.time_base
    return 0.0


def _parse_hms(value: str) -> float | None:
    """'00:00:02.000000000' (Matroska's per-track DURATION tag) in seconds."""
    try:
        h, m, s = value.strip().split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)
    except (ValueError, AttributeError):
        return None


def header_duration(container: av.container.InputContainer, vstream: av.video.stream.VideoStream) -> float | None:
    """Video duration from headers alone: the stream's, Matroska's track tag, then the container's."""
    if vstream.duration and vstream.time_base is not None:
        return float(vstream.duration * vstream.time_base)
    tag = next((v for k, v in vstream.metadata.items() if k.upper() == "DURATION"), None)
    if tag and (d := _parse_hms(tag)):
        return d
    if container.duration and container.duration > 0:
        return container.duration / av.time_base
    return None


def scan_duration(path: str | os.PathLike) -> float | None:
    """Video duration by reading every packet's timestamp (no decoding): the fallback for bare streams."""
    with open_media(path) as container:
        vstream = video_stream(container, str(path))
        origin = time_origin(container, vstream)
        rate = stream_fps(vstream)
        end, count = None, 0
        try:
            for packet in container.demux(vstream):
                if packet.size == 0:
                    continue
                count += 1
                if packet.pts is not None and packet.time_base is not None:
                    dur = float(packet.duration * packet.time_base) if packet.duration else (1 / rate if rate else 0)
                    t = float(packet.pts * packet.time_base) + dur - origin
                    end = t if end is None else max(end, t)
        except FFmpegError:
            pass  # a damaged tail: what was read so far is the duration
    if end is None and count and rate:
        end = count / rate
    return end


def stream_fps(vstream: av.video.stream.VideoStream) -> float:
    """Average frame rate, else the codec's nominal rate, else 0.0 when the file does not say."""
    for rate in (vstream.average_rate, vstream.guessed_rate, vstream.base_rate):
        if rate and rate > 0:
            return float(rate)
    return 0.0


def display_size(vstream: av.video.stream.VideoStream) -> tuple[int, int]:
    """(width, height) as shown: anamorphic pixels (sample aspect ratio != 1) are stretched to square."""
    ctx = vstream.codec_context
    w, h = int(ctx.width), int(ctx.height)
    sar = vstream.sample_aspect_ratio or ctx.sample_aspect_ratio
    if sar and sar > 0 and sar != 1:
        w = int(round(w * float(sar)))
    return w, h


def _container_name(container: av.container.InputContainer, path: Path) -> str:
    """FFmpeg's demuxer name, shortened to the file's suffix when it is one of the aliases."""
    names = container.format.name.split(",")
    suffix = path.suffix.lower().lstrip(".")
    return suffix if suffix in names else names[0]


def first_frame(
    container: av.container.InputContainer, vstream: av.video.stream.VideoStream, path: str
) -> av.VideoFrame:
    """Decode the first video frame; ``TruncatedMedia`` when none decodes."""
    try:
        for packet in container.demux(vstream):
            try:
                frames = packet.decode()
            except FFmpegError:
                continue  # a damaged packet: try the next one
            if frames:
                return frames[0]
    except FFmpegError:
        pass
    raise TruncatedMedia(path, "truncated: decoded 0 frames")


def video_data_end(
    container: av.container.InputContainer, vstream: av.video.stream.VideoStream, origin: float, from_s: float
) -> float | None:
    """End time (relative seconds) of the last video packet readable after ``from_s``; packets only, no decoding."""
    if vstream.time_base is not None:  # no time base (or not seekable): read on from where we are
        with contextlib.suppress(FFmpegError):
            container.seek(max(0, int((origin + from_s) / vstream.time_base)), backward=True, stream=vstream)
    end = None
    try:
        for packet in container.demux(vstream):
            ts = packet.pts if packet.pts is not None else packet.dts
            if ts is None or packet.time_base is None:
                continue
            t = float((ts + (packet.duration or 0)) * packet.time_base) - origin
            end = t if end is None else max(end, t)
    except FFmpegError:
        pass  # the data stops here
    return end


def _tail_tolerance(duration: float) -> float:
    return max(_TAIL_TOLERANCE_S, _TAIL_TOLERANCE_FRACTION * duration)


def probe(path: str | os.PathLike) -> MediaInfo:
    """Describe ``path`` after proving that its first video frame decodes.

    Also reads (without decoding) the video packets of the last moments the headers promise, so that a
    file cut short after a complete header (a faststart MP4, an MKV) is ``TruncatedMedia`` here and
    not a silent run of repeated frames at training time. Raises ``MediaNotFound``, ``EmptyFile``,
    ``NotMedia``, ``NoVideoStream``, ``UnsupportedCodec`` or ``TruncatedMedia`` (all ``MediaError``);
    never a bare FFmpeg exception.
    """
    p = Path(path)
    with open_media(p) as container:
        try:
            vstream = video_stream(container, str(p))
            astream = audio_stream(container)
            fps = stream_fps(vstream)
            duration = header_duration(container, vstream)
            frame = first_frame(container, vstream, str(p))
            width, height = display_size(vstream)
            pix_fmt = frame.format.name if frame.format is not None else None
            if width <= 0 or height <= 0:
                width, height = frame.width, frame.height
            actx = astream.codec_context if astream is not None else None
            n_frames = int(vstream.frames) if vstream.frames and vstream.frames > 0 else None
            container_name = _container_name(container, p)
            video_codec = vstream.codec_context.codec.canonical_name
            audio_codec = actx.codec.canonical_name if actx is not None else None
            audio_rate = int(actx.sample_rate) if actx is not None and actx.sample_rate else None
            audio_channels = int(actx.channels) if actx is not None and actx.channels else None
            if duration is not None and duration > 0:
                tol = _tail_tolerance(duration)
                end = video_data_end(container, vstream, time_origin(container, vstream), duration - tol)
                if end is None or end < duration - tol:
                    seen = 0.0 if end is None else end
                    raise TruncatedMedia(str(p), f"truncated: video data ends at {seen:.2f} s of {duration:.2f} s")
        except FFmpegError as err:
            raise TruncatedMedia(str(p), f"truncated or corrupt: {ffmpeg_message(err)}") from None
    if duration is None or duration <= 0:
        duration = scan_duration(p)
    if duration is None or duration <= 0:
        raise TruncatedMedia(str(p), "truncated: unknown duration")
    if fps <= 0 and n_frames:
        fps = n_frames / duration
    return MediaInfo(
        path=str(p),
        container=container_name,
        duration_s=float(duration),
        fps=fps,
        width=width,
        height=height,
        video_codec=video_codec,
        n_frames=n_frames,
        has_audio=astream is not None,
        audio_codec=audio_codec,
        audio_rate=audio_rate,
        audio_channels=audio_channels,
        pix_fmt=pix_fmt,
    )
