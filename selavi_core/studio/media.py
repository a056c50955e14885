"""Showing preview media in the Studio: a poster's bytes when it decodes, a placeholder card when not.

The Studio never plays source files directly: sources may be HEVC or MPEG-4 Part 2, which Chromium
"plays" without decoding a frame. It plays the H.264/AAC previews listed in the catalog's previews
index (``selavi_core.media.preview``: ``PreviewIndex`` and ``ClipMedia``), and says clearly why a
clip has nothing to show (no preview built, preview failed, file gone, poster unreadable) instead of
raising.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from selavi_core.media.preview import ClipMedia


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
