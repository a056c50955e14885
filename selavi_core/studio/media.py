"""Preview media per clip: the browser-ready MP4 and poster JPEG that ``selavi previews`` wrote.

The Studio never plays source files directly: sources may be HEVC or MPEG-4 Part 2, which Chromium
"plays" without decoding a frame. It plays the H.264/AAC previews listed in
``CATALOG_DIR/previews/index.parquet`` (clip_id, mp4, poster, error), and says clearly why a clip
has nothing to show (no preview built, preview failed, file gone, poster unreadable) instead of
raising.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

PREVIEWS_DIR = "previews"
PREVIEWS_INDEX = "index.parquet"


@dataclass(frozen=True)
class ClipMedia:
    clip_id: str
    mp4: Path | None  # None when there is nothing playable; ``problem`` says why
    poster: Path | None
    problem: str | None = None

    @property
    def playable(self) -> bool:
        return self.mp4 is not None


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
        path = self.dir / PREVIEWS_INDEX
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
                df = pd.DataFrame(columns=["clip_id", "mp4", "poster", "error"])
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


def placeholder_svg(text: str, width: int = 240, height: int = 180) -> str:
    """A grey card with a short reason, as inline SVG: what the grid shows for a clip without media."""
    safe = (text or "no preview").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")[:60]
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="100%" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{safe}"><rect width="{width}" height="{height}" fill="#e6e6e6" stroke="#b0b0b0"/>'
        f'<text x="50%" y="46%" text-anchor="middle" font-family="sans-serif" font-size="15" fill="#555">'
        f'no preview</text><text x="50%" y="60%" text-anchor="middle" font-family="sans-serif" '
        f'font-size="10" fill="#777">{safe}</text></svg>'
    )
