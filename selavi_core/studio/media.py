"""Showing clip media in the Studio: what plays (a preview, or the source as it is), posters, placeholders.

Sources may be HEVC or MPEG-4 Part 2, which Chromium "plays" without decoding a frame, so a source is
played directly only when ``selavi_core.media.playable`` says a browser decodes it (H.264/AAC or
VP9/Opus in MP4/WebM); it is then served with range requests and played from its clip window
(``serve``). Other clips play a preview: the one ``selavi previews`` built ahead of time
(``PreviewIndex``), or one ``OnDemand`` builds in the background for the clips on the page being
viewed, a few at a time, into the catalog's previews folder (content-keyed files, so each is built
once). Posters are made the same way. Until then the page shows a placeholder that says so, and says
clearly why a clip has nothing to show (preview failed, file gone, poster unreadable) instead of raising.
"""

from __future__ import annotations

import html
import io
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from selavi_core.config import STUDIO

if TYPE_CHECKING:
    from selavi_core.media.preview import ClipMedia

#: What a placeholder says while a clip's media is being built.
BUILDING = "building a browser preview…"
BUILDING_POSTER = "making the poster…"


def read_poster(media: ClipMedia) -> bytes | None:
    """The poster JPEG's bytes if it decodes as an image, else None (the caller shows a placeholder)."""
    if media.poster is None:
        return None
    try:
        data = media.poster.read_bytes()
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            im.verify()
        return data
    except Exception:
        return None


def placeholder_svg(text: str, width: int = 240, height: int = 180, title: str = "no preview") -> str:
    """A grey card with a short reason, as inline SVG: what the grid shows for a clip without media."""
    safe = html.escape(text or title)[:60]
    head = html.escape(title)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="100%" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{safe}"><rect width="{width}" height="{height}" fill="#e6e6e6" stroke="#b0b0b0"/>'
        f'<text x="50%" y="46%" text-anchor="middle" font-family="sans-serif" font-size="15" fill="#555">'
        f'{head}</text><text x="50%" y="60%" text-anchor="middle" font-family="sans-serif" '
        f'font-size="10" fill="#777">{safe}</text></svg>'
    )


def video_html(url: str, *, poster_url: str | None = None, autoplay: bool = False, label: str = "") -> str:
    """A ``<video>`` element for a same-origin media URL (``serve.MediaServer.url``; its ``#t=`` is the window)."""
    attrs = ["controls", 'preload="auto"', "playsinline", 'style="width:100%;max-height:480px;background:#000"']
    if autoplay:
        attrs += ["autoplay", "muted"]
    if poster_url:
        attrs.append(f'poster="{html.escape(poster_url, quote=True)}"')
    if label:
        attrs.append(f'aria-label="{html.escape(label, quote=True)}" title="{html.escape(label, quote=True)}"')
    return f'<video src="{html.escape(url, quote=True)}" {" ".join(attrs)}></video>'


@dataclass(frozen=True)
class Built:
    """The state of one on-demand build: done (``files``), still running, or failed (``error``)."""

    done: bool
    mp4: Path | None = None
    poster: Path | None = None
    error: str | None = None


class OnDemand:
    """Previews and posters built in the background, ``workers`` at a time, into ``out_dir`` (thread-safe).

    ``preview(...)`` / ``poster(...)`` return at once: what is on disk already, else a ``Built`` that
    is not done (the build is queued once, however often it is asked for), or the build's error. A
    failure is remembered for the life of the process (the source will not mend by itself).
    """

    def __init__(self, out_dir: str | os.PathLike, workers: int = STUDIO.build_workers):
        self.out_dir = Path(out_dir)
        self.workers = max(1, int(workers))
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._jobs: dict[tuple[str, str, float, float], Future[Built]] = {}

    def _submit(self, key: tuple[str, str, float, float]) -> Built:
        with self._lock:
            fut = self._jobs.get(key)
            if fut is None:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="selavi-media")
                fut = self._pool.submit(self._build, key)
                self._jobs[key] = fut
        if fut.done():
            return fut.result()
        return Built(False)

    def _build(self, key: tuple[str, str, float, float]) -> Built:
        from selavi_core.errors import MediaError
        from selavi_core.media.preview import ensure_poster, ensure_preview

        kind, path, start, end = key
        try:
            if kind == "poster":
                return Built(True, poster=ensure_poster(path, start, end, self.out_dir))
            files = ensure_preview(path, start, end, self.out_dir)
            return Built(True, mp4=files.mp4, poster=files.poster)
        except MediaError as err:
            return Built(True, error=err.reason)
        except OSError as err:  # e.g. a read-only catalog folder
            return Built(True, error=f"cannot write {self.out_dir}: {err.strerror or err}")
        except Exception as err:  # a decoder bug on one odd file must not kill the worker
            return Built(True, error=f"{type(err).__name__}: {err}")

    def _cached(self, path: str, start: float, end: float) -> tuple[Path | None, Path | None] | str:
        from selavi_core.media.preview import cached_preview

        try:
            return cached_preview(path, start, end, self.out_dir)
        except OSError as err:
            return f"source unreadable: {err.strerror or err}"

    def preview(self, path: str, start: float, end: float) -> Built:
        """The preview MP4 + poster of a window: built already, being built now, or why it failed."""
        cached = self._cached(path, start, end)
        if isinstance(cached, str):
            return Built(True, error=cached)
        mp4, poster = cached
        if mp4 is not None and poster is not None:
            return Built(True, mp4=mp4, poster=poster)
        return self._submit(("preview", path, float(start), float(end)))

    def poster(self, path: str, start: float, end: float) -> Built:
        """The poster JPEG of a window (made without a preview), as ``preview`` does."""
        cached = self._cached(path, start, end)
        if isinstance(cached, str):
            return Built(True, error=cached)
        if cached[1] is not None:
            return Built(True, poster=cached[1])
        return self._submit(("poster", path, float(start), float(end)))

    def pending(self) -> int:
        """Builds queued or running."""
        with self._lock:
            return sum(1 for f in self._jobs.values() if not f.done())
