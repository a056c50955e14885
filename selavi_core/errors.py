"""Typed errors with human reasons.

Every failure a user can cause (a bad file, a wrong layout, an unfit checkpoint) is one of these,
so that the CLI and the app can print ``reason`` instead of a traceback.
"""

from __future__ import annotations


class SelaviError(Exception):
    """Base class: ``str(err)`` is a sentence a user can act on."""


class MediaError(SelaviError):
    """A media file could not be probed or decoded. ``reason`` is short, e.g. "no video stream"."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class MediaNotFound(MediaError):
    def __init__(self, path: str):
        super().__init__(path, "file not found")


class EmptyFile(MediaError):
    def __init__(self, path: str):
        super().__init__(path, "empty file (0 bytes)")


class NotMedia(MediaError):
    """The container could not be opened at all (text file, random bytes, unknown format)."""


class NoVideoStream(MediaError):
    def __init__(self, path: str):
        super().__init__(path, "no video stream")


class UnsupportedCodec(MediaError):
    def __init__(self, path: str, codec: str):
        super().__init__(path, f"unsupported codec {codec}")
        self.codec = codec


class TruncatedMedia(MediaError):
    """The file opens but yields too little (or nothing) to decode."""


class CatalogError(SelaviError):
    """A source layout or catalog file is missing or malformed."""


class RunError(SelaviError):
    """A run folder is missing, incomplete or does not match its catalog."""


class CheckpointError(SelaviError):
    """A checkpoint cannot be read or does not fit the model."""
