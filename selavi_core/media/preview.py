"""Browser previews: one short H.264/AAC MP4 and one poster JPEG per clip window.

Browsers play H.264 + AAC in MP4 reliably only as yuv420p, at a constant frame rate, with the moov
atom before the media data (``+faststart``) so playback starts before the file has fully loaded
(browser-testing.md, "Media serving facts"). Grids show posters; one player at a time plays an MP4.

Files are named by a content key, so a preview is built once and reused as long as the source
file and the window are unchanged, and a renamed or moved source does not force a rebuild.
Every file is written under a temporary name and renamed into place: an interrupted build never
leaves a half file that a later run would take as complete.

The previews index (this module is its one home): ``selavi previews`` writes the previews of a
catalog into ``CATALOG_DIR/previews`` with ``index.parquet`` (``INDEX_COLUMNS``: clip_id, mp4,
poster, error), ``mp4``/``poster`` as file names relative to the index's folder (so the folder can
move). ``write_preview_index`` writes it, ``load_preview_index`` reads it with absolute paths,
``preview_mp4s`` gives clip id -> playable MP4 (the exports), and ``PreviewIndex`` is the cached,
thread-safe lookup the Studio uses, which says why a clip has nothing to show instead of raising.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd
from av.audio.stream import AudioStream
from PIL import Image

from selavi_core.config import CATALOG, PREVIEW, PreviewSpec, default_workers
from selavi_core.errors import MediaError, TruncatedMedia
from selavi_core.io import atomic_write, remove_orphan_temps
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

#: The previews folder inside a catalog folder, and the index file inside it.
PREVIEWS_DIR = "previews"
INDEX_FILE = "index.parquet"
INDEX_COLUMNS = ("clip_id", "mp4", "poster", "error")
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
            last_obj: av.VideoFrame | None = None
            last_yuv: av.VideoFrame | None = None
            for i, frame in iter_window_frames(
                container, vstream, origin, start_s, n_out, spec.fps, src, fresh=samples is None
            ):
                if frame is not last_obj:
                    full = frame.reformat(width=sw, height=sh, format="rgb24", interpolation="AREA").to_ndarray()
                    rgb = np.ascontiguousarray(full[cy : cy + out_h, cx : cx + out_w], dtype=np.uint8)  # rgb24: uint8
                    last_obj, last_yuv = (
                        frame,
                        av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p"),
                    )
                    if i <= poster_slot:
                        poster_rgb = rgb
                assert last_yuv is not None  # made from the first frame
                last_yuv.pts = i
                last_yuv.time_base = Fraction(1, spec.fps)
                t = i / spec.fps
                # interleave: audio up to this frame's time, so a browser can play while downloading
                while a_next < len(audio_packets) and _packet_s(audio_packets[a_next]) <= t:
                    out.mux(audio_packets[a_next])
                    a_next += 1
                out.mux(vout.encode(last_yuv))
            out.mux(vout.encode(None))
            for packet in audio_packets[a_next:]:
                out.mux(packet)

    Image.fromarray(poster_rgb).save(jpg_tmp, format="JPEG", quality=spec.poster_quality)


def _packet_s(packet: av.Packet) -> float:
    """An encoded packet's presentation time in seconds (the encoder stamps every packet it returns)."""
    assert packet.pts is not None and packet.time_base is not None
    return float(packet.pts * packet.time_base)


def _encode_audio(stream: AudioStream, samples: np.ndarray, rate: int) -> list[av.Packet]:
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
    clean_orphans(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # the poster is renamed into place last: both present means both complete. A preview can be rebuilt,
    # so it is not fsynced (thousands of small files); ``_complete`` refuses an empty one.
    with atomic_write(files.poster, durable=False) as jpg_tmp, atomic_write(files.mp4, durable=False) as mp4_tmp:
        try:
            _encode(src, start_s, end_s, mp4_tmp, jpg_tmp, spec)
        except FFmpegError as err:
            raise TruncatedMedia(src, f"truncated or corrupt: {ffmpeg_message(err)}") from None
    return files


_CLEANED: set[str] = set()
_CLEANED_LOCK = threading.Lock()


def clean_orphans(out_dir: str | os.PathLike) -> int:
    """Remove the half-written files that killed builds left in ``out_dir`` (``io.remove_orphan_temps``).

    Once per folder and process, before its first build (``selavi previews`` at its start, the Studio
    at its first on-demand build): a folder of 100,000 previews is listed once, not once a clip.
    Returns how many files were removed.
    """
    key = os.path.abspath(out_dir)
    with _CLEANED_LOCK:
        if key in _CLEANED:
            return 0
        _CLEANED.add(key)
    return remove_orphan_temps(
        key, max_age_s=CATALOG.orphan_temp_age_s, dead_pid_age_s=CATALOG.orphan_temp_dead_pid_age_s
    )


def preview_files(
    path: str | os.PathLike, start_s: float, end_s: float, out_dir: str | os.PathLike, spec: PreviewSpec = PREVIEW
) -> PreviewFiles:
    """Where ``ensure_preview`` puts (or has put) the preview of this window; nothing is built or checked."""
    key = preview_key(path, start_s, end_s, spec)
    return PreviewFiles(mp4=Path(out_dir) / f"{key}.mp4", poster=Path(out_dir) / f"{key}.jpg")


def cached_preview(
    path: str | os.PathLike, start_s: float, end_s: float, out_dir: str | os.PathLike, spec: PreviewSpec = PREVIEW
) -> tuple[Path | None, Path | None]:
    """(preview MP4, poster JPEG) of this window already in ``out_dir`` (each None when not there).

    Raises ``OSError`` when the source cannot be read (the key needs its size, mtime and edges)."""
    files = preview_files(path, start_s, end_s, out_dir, spec)
    return (files.mp4 if _complete(files.mp4) else None), (files.poster if _complete(files.poster) else None)


def ensure_poster(
    path: str | os.PathLike, start_s: float, end_s: float, out_dir: str | os.PathLike, spec: PreviewSpec = PREVIEW
) -> Path:
    """The poster JPEG of [start_s, end_s) of ``path`` in ``out_dir`` (the frame a preview would use), made if missing.

    For clips the browser plays as they are: one frame is decoded, no preview is encoded. Raises
    ``MediaError`` subclasses for bad sources.
    """
    src = str(path)
    check_file(src)
    poster = preview_files(src, start_s, end_s, out_dir, spec).poster
    if _complete(poster):
        return poster
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    n_out = max(1, int(round((end_s - start_s) * spec.fps)))
    at = start_s + (n_out // 2) / spec.fps
    try:
        with open_media(src) as container:
            vstream = video_stream(container, src)
            origin = time_origin(container, vstream)
            src_w, src_h = display_size(vstream)
            out_w, out_h = _preview_size(src_w, src_h, spec)
            sw, sh, cx, cy, _, _ = target_geometry(src_w, src_h, size=(out_w, out_h))
            frame = next(f for _, f in iter_window_frames(container, vstream, origin, at, 1, spec.fps, src))
            full = frame.reformat(width=sw, height=sh, format="rgb24", interpolation="AREA").to_ndarray()
    except FFmpegError as err:
        raise TruncatedMedia(src, f"truncated or corrupt: {ffmpeg_message(err)}") from None
    rgb = np.ascontiguousarray(full[cy : cy + out_h, cx : cx + out_w], dtype=np.uint8)
    with atomic_write(poster, durable=False) as jpg_tmp:
        Image.fromarray(rgb).save(jpg_tmp, format="JPEG", quality=spec.poster_quality)
    return poster


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
    results: dict[int, PreviewFiles | MediaError] = {}

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
    return [results[k] for k in range(len(items))]


# --------------------------------------------------------------------------------------------- the index


def write_preview_index(
    out_dir: str | os.PathLike, clip_ids: Sequence[str], results: Sequence[PreviewFiles | MediaError]
) -> pd.DataFrame:
    """Write ``out_dir/index.parquet`` for ``build_previews`` results (atomically) and return it.

    One row per clip: the preview's file names (relative to ``out_dir``), or the reason it failed.
    """
    rows = []
    for clip_id, res in zip(clip_ids, results, strict=True):
        if isinstance(res, MediaError):
            rows.append({"clip_id": str(clip_id), "mp4": None, "poster": None, "error": res.reason})
        else:
            rows.append({"clip_id": str(clip_id), "mp4": res.mp4.name, "poster": res.poster.name, "error": None})
    index = pd.DataFrame(rows, columns=list(INDEX_COLUMNS)).astype(dict.fromkeys(INDEX_COLUMNS, "string"))
    with atomic_write(Path(out_dir) / INDEX_FILE) as tmp:
        index.to_parquet(tmp, index=False)
    return index


def load_preview_index(previews_dir: str | os.PathLike) -> pd.DataFrame:
    """``index.parquet`` of a previews folder with ``mp4`` and ``poster`` as absolute paths (None on error)."""
    previews_dir = Path(previews_dir)
    index = pd.read_parquet(previews_dir / INDEX_FILE)
    for col in ("mp4", "poster"):
        index[col] = [str(previews_dir / v) if isinstance(v, str) else None for v in index[col]]
    return index


def preview_mp4s(catalog_dir: str | os.PathLike) -> dict[str, str]:
    """clip id -> absolute preview MP4 listed in the catalog's previews index ({} when none was built)."""
    folder = Path(catalog_dir) / PREVIEWS_DIR
    if not (folder / INDEX_FILE).is_file():
        return {}
    index = load_preview_index(folder)
    return {str(c): str(m) for c, m in zip(index["clip_id"], index["mp4"], strict=True) if isinstance(m, str)}


@dataclass(frozen=True)
class ClipMedia:
    """What the Studio can show of a clip: a preview MP4, or the source itself, a poster, or why not."""

    clip_id: str
    mp4: Path | None  # the preview; None when there is none (``source`` or ``problem`` then)
    poster: Path | None
    problem: str | None = None
    source: Path | None = None  # the source file, when no preview is there and a browser plays it as it is
    start_s: float = 0.0  # the clip's window in ``source``
    end_s: float | None = None
    pending: bool = False  # a preview or poster is being built for it (show a placeholder, look again soon)

    @property
    def playable(self) -> bool:
        return self.mp4 is not None or self.source is not None


class PreviewIndex:
    """clip_id -> preview files, read once from the catalog's previews index (re-read when it changes)."""

    def __init__(self, catalog_dir: str | Path):
        self.catalog_dir = Path(catalog_dir)
        self.dir = self.catalog_dir / PREVIEWS_DIR
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._rows: dict[str, tuple[str | None, str | None, str | None]] = {}
        self._extra: dict[str, tuple[str | None, str | None, str | None]] = {}

    def _refresh(self) -> None:
        path = self.dir / INDEX_FILE
        try:
            mtime = path.stat().st_mtime
        except OSError:
            mtime = None
        if mtime == self._mtime and (self._rows or mtime is None):
            return
        rows: dict[str, tuple[str | None, str | None, str | None]] = {}
        if mtime is not None:
            try:
                df = pd.read_parquet(path)
            except Exception:  # an unreadable index is the same as none: every clip shows a placeholder
                df = pd.DataFrame(columns=list(INDEX_COLUMNS))
            cols = {c: (df[c] if c in df else pd.Series([None] * len(df))) for c in ("mp4", "poster", "error")}
            for cid, mp4, poster, err in zip(
                df["clip_id"].astype(str), cols["mp4"], cols["poster"], cols["error"], strict=True
            ):
                rows[cid] = (_str_or_none(mp4), _str_or_none(poster), _str_or_none(err))
        self._rows, self._mtime = rows, mtime

    def __len__(self) -> int:
        with self._lock:
            self._refresh()
            return len(self._rows)

    def available(self) -> int:
        """How many clips have a preview MP4 listed (without touching the files)."""
        with self._lock:
            self._refresh()
            return sum(1 for mp4, _, _ in self._rows.values() if mp4)

    def remember(self, clip_id: str, mp4: str | Path | None, poster: str | Path | None) -> None:
        """Record a preview built on demand in this process (the on-disk index is the previews command's)."""
        with self._lock:
            self._extra[str(clip_id)] = (str(mp4) if mp4 else None, str(poster) if poster else None, None)

    def lookup(self, clip_id: str) -> ClipMedia:
        with self._lock:
            self._refresh()
            row = self._extra.get(clip_id) or self._rows.get(clip_id)
        if row is None:
            return ClipMedia(clip_id, None, None, "no preview yet: run `selavi previews CATALOG_DIR`")
        mp4, poster, err = row
        mp4_path, poster_path = self._resolve(mp4), self._resolve(poster)
        if mp4_path is None and poster_path is None:
            return ClipMedia(clip_id, None, None, f"preview failed: {err}" if err else "no preview was built")
        problem = None
        if mp4_path is not None and not mp4_path.is_file():
            problem, mp4_path = f"preview file missing: {mp4_path.name}", None
        elif mp4_path is None:
            problem = f"no playable preview: {err}" if err else "no playable preview"
        if poster_path is not None and not poster_path.is_file():
            poster_path = None
        return ClipMedia(clip_id, mp4_path, poster_path, problem)

    def _resolve(self, p: str | None) -> Path | None:
        if not p:
            return None
        path = Path(p)
        if path.is_absolute():
            return path
        for base in (self.dir, self.catalog_dir):  # relative paths: to the previews folder, then the catalog
            if (base / path).exists():
                return base / path
        return self.dir / path


def _str_or_none(v: object) -> str | None:
    if v is None or (isinstance(v, float) and v != v) or v is pd.NA:
        return None
    s = str(v)
    return s or None
