"""Whether a browser plays a media file as it is, from the facts ``probe`` records in the catalog.

The Studio serves such a file directly (with HTTP range requests, from its clip window) and builds a
preview only for the others. The rule is what Chromium decodes for real (browser-testing.md):
H.264 (8-bit 4:2:0), VP9, VP8 or AV1 video with AAC, MP3, Opus or Vorbis sound (or none), in MP4 or
WebM. HEVC and MPEG-4 Part 2 "play" in Chromium without a single decoded frame, 10-bit or 4:4:4
H.264 does not decode at all, and Matroska is not a format browsers promise to open: those, and any
file whose facts are unknown (a catalog from before they were probed), get a preview.
The moov atom's position does not matter: with range requests a browser fetches a trailing moov.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Containers (as ``probe`` names them) -> video codecs and audio codecs a browser decodes in them.
BROWSER_FORMATS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "mp4": (frozenset({"h264", "vp9", "av1"}), frozenset({"aac", "mp3", "opus"})),
    "m4v": (frozenset({"h264", "vp9", "av1"}), frozenset({"aac", "mp3", "opus"})),
    "webm": (frozenset({"vp8", "vp9", "av1"}), frozenset({"opus", "vorbis"})),
}
#: Pixel formats browsers decode (8-bit 4:2:0; "j" is the full-range variant of the same).
BROWSER_PIX_FMTS = frozenset({"yuv420p", "yuvj420p"})


@dataclass(frozen=True)
class Playability:
    ok: bool
    reason: str  # why not (or "plays as it is")


def _known(value: object) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    s = str(value).strip().lower()
    return s if s and s not in ("<na>", "nan", "none") else None


def browser_playable(
    container: object, video_codec: object, pix_fmt: object, audio_codec: object, has_audio: object
) -> Playability:
    """Whether Chromium plays a file with these probe facts as it is (unknown facts: no)."""
    cont, vcodec, pix, acodec = _known(container), _known(video_codec), _known(pix_fmt), _known(audio_codec)
    if cont is None or vcodec is None or pix is None:
        return Playability(False, "format not probed (catalog from an older selavi)")
    if cont not in BROWSER_FORMATS:
        return Playability(False, f"{cont} container")
    videos, audios = BROWSER_FORMATS[cont]
    if vcodec not in videos:
        return Playability(False, f"{vcodec} video in {cont}")
    if pix not in BROWSER_PIX_FMTS:
        return Playability(False, f"{vcodec} video in {pix}")
    sound = bool(has_audio) if _known(has_audio) is not None else acodec is not None
    if sound:
        if acodec is None:
            return Playability(False, "sound of unknown format")
        if acodec not in audios:
            return Playability(False, f"{acodec} sound in {cont}")
    return Playability(True, "plays as it is")
