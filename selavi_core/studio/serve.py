"""Serving clip media to the browser: an allow-list of folders, opaque URLs, and HTTP range requests.

Long source files are not read into memory (what ``st.video(path)`` does, per session): the Studio
mounts ``media_app``, a plain ASGI app, next to Streamlit (``app/serve.py``: ``st.App(routes=...)``,
same host and port), and its pages ask ``MediaServer.url(path, roots)`` for a URL.

Security: only files *registered* by the Studio are served, under an opaque token (an HMAC of the
path under a random per-process key, so knowing a path does not give its URL: with sign-in, only a
signed-in page hands URLs out); a file is
registered only if its real path (symlinks resolved) lies inside one of the allowed roots, i.e.
the catalog's media roots (``catalog.schema.media_roots``, recorded at ingest) and its previews
folder. A catalog or previews-index row pointing anywhere else (``../../etc/passwd``,
``/etc/hostname``, a symlink out of the root) gets no URL, and the check is repeated on every
request, so a file swapped for a symlink after registration is refused too.

Ranges: ``GET``/``HEAD`` with ``Range: bytes=a-b`` (also ``a-`` and ``-n``) answer ``206`` with
``Content-Range`` and just those bytes, read in chunks off the event loop; an unsatisfiable range is
``416``; no (or a multi-part) range is the whole file, ``200``. Browsers need this to seek (start a
clip at its window) and to read an MP4's trailing moov atom.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
import threading
import urllib.parse
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Where the Studio mounts ``media_app`` (``app/serve.py``).
MEDIA_PREFIX = "/selavi-media"
#: Content types by suffix (anything else is refused: this serves clip media and posters only).
CONTENT_TYPES = {
    ".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/mp4", ".webm": "video/webm",
    ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
}  # fmt: skip
CHUNK_BYTES = 256 * 1024
#: Registered files kept (least recently asked for dropped first; a dropped URL is asked for again).
MAX_ENTRIES = 100_000

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _real(p: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.fspath(p)))


def allowed_file(path: str | os.PathLike, roots: Iterable[str | os.PathLike]) -> Path | None:
    """The file's real path if it is a regular file inside one of ``roots`` (symlinks resolved), else None.

    A relative path is refused (rows hold absolute paths), so is ``..`` that leaves a root: the test
    is on the resolved path, not on the text.
    """
    raw = os.fspath(path)
    if not raw or "\x00" in raw or not os.path.isabs(raw):
        return None
    real = _real(raw)
    if not real.is_file():
        return None
    for root in roots:
        r = os.fspath(root)
        if r and os.path.isabs(r) and real.is_relative_to(_real(r)):
            return real
    return None


def content_type(path: str | os.PathLike) -> str | None:
    return CONTENT_TYPES.get(Path(path).suffix.lower())


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1


class Unsatisfiable(ValueError):
    """A range that starts past the end of the file (answered with 416)."""


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one byte range asked for by a ``Range`` header, clipped to the file; None means the whole file.

    ``bytes=a-b``, ``bytes=a-`` and ``bytes=-n`` (the last n bytes). A header that is malformed, not in
    bytes, or asks for several ranges is ignored (the whole file, as RFC 9110 allows). Raises
    ``Unsatisfiable`` for a range starting at or after ``size`` (or a zero-length suffix).
    """
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    first, last = first.strip(), last.strip()
    try:
        a = int(first) if first else None
        b = int(last) if last else None
    except ValueError:
        return None
    if a is None:  # the last ``b`` bytes
        if b is None or b < 0:
            return None
        if b == 0 or size == 0:
            raise Unsatisfiable(header)
        return ByteRange(max(0, size - b), size - 1)
    if a < 0 or (b is not None and b < a):
        return None
    if a >= size:
        raise Unsatisfiable(header)
    return ByteRange(a, size - 1 if b is None else min(b, size - 1))


@dataclass(frozen=True)
class _Entry:
    path: Path
    roots: tuple[str, ...]
    ctype: str


class MediaServer:
    """Registered files by token (thread-safe: Streamlit sessions register, the ASGI app reads)."""

    def __init__(self, prefix: str = MEDIA_PREFIX, max_entries: int = MAX_ENTRIES):
        self.prefix = prefix.rstrip("/")
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._key = secrets.token_bytes(32)
        self.mounted = False  # set by the app when ``media_app`` is really routed (else pages fall back)

    def register(self, path: str | os.PathLike, roots: Iterable[str | os.PathLike]) -> str | None:
        """The token of ``path`` if it may be served (``allowed_file``, a known media suffix), else None."""
        allowed = tuple(str(os.fspath(r)) for r in roots)
        real = allowed_file(path, allowed)
        ctype = content_type(real) if real is not None else None
        if real is None or ctype is None:
            return None
        # keyed with this process's secret: a token cannot be computed from a path, only handed out by a page
        token = hmac.new(self._key, f"{real}\x00{'|'.join(allowed)}".encode(), hashlib.sha256).hexdigest()[:32]
        with self._lock:
            self._entries[token] = _Entry(real, allowed, ctype)
            self._entries.move_to_end(token)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return token

    def url(self, path: str | os.PathLike, roots: Iterable[str | os.PathLike], fragment: str = "") -> str | None:
        """A same-origin URL (``/selavi-media/TOKEN/name.mp4#t=...``) for ``path``, or None when refused."""
        token = self.register(path, roots)
        if token is None:
            return None
        name = urllib.parse.quote(Path(path).name)
        return f"{self.prefix}/{token}/{name}" + (f"#{fragment}" if fragment else "")

    def lookup(self, token: str) -> _Entry | None:
        with self._lock:
            entry = self._entries.get(token)
            if entry is not None:
                self._entries.move_to_end(token)
            return entry

    def resolve(self, token: str) -> tuple[Path, str] | None:
        """(file, content type) for a token, re-checked against its roots now; None when refused."""
        entry = self.lookup(token)
        if entry is None:
            return None
        real = allowed_file(entry.path, entry.roots)
        if real is None or real != entry.path:
            return None
        return real, entry.ctype

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI app: ``GET|HEAD PREFIX/TOKEN/NAME`` with range support."""
        if scope.get("type") != "http":
            return
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            await _respond(send, 405, [(b"allow", b"GET, HEAD")])
            return
        path = str(scope.get("path", ""))
        root_path = str(scope.get("root_path", ""))
        if root_path and path.startswith(root_path):  # mounted: Starlette keeps the mount prefix in ``path``
            path = path[len(root_path) :]
        elif path.startswith(self.prefix + "/"):
            path = path[len(self.prefix) :]
        token = path.lstrip("/").split("/", 1)[0]
        found = self.resolve(token) if token else None
        if found is None:
            await _respond(send, 404)
            return
        file, ctype = found
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        try:
            size = file.stat().st_size
            rng = parse_range(headers.get("range"), size)
        except Unsatisfiable:
            await _respond(send, 416, [(b"content-range", f"bytes */{size}".encode())])
            return
        except OSError:
            await _respond(send, 404)
            return
        common = [(b"content-type", ctype.encode()), (b"accept-ranges", b"bytes"),
                  (b"cache-control", b"private, max-age=3600")]  # fmt: skip
        if rng is None:
            status, start, length = 200, 0, size
            extra = []
        else:
            status, start, length = 206, rng.start, rng.length
            extra = [(b"content-range", f"bytes {rng.start}-{rng.end}/{size}".encode())]
        await send({"type": "http.response.start", "status": status,
                    "headers": [*common, *extra, (b"content-length", str(length).encode())]})  # fmt: skip
        if method == "HEAD" or length == 0:
            await send({"type": "http.response.body", "body": b""})
            return
        await _send_file(send, file, start, length)


async def _respond(send: Send, status: int, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = {404: b"not found", 405: b"method not allowed", 416: b"range not satisfiable"}.get(status, b"")
    hdrs = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


async def _send_file(send: Send, file: Path, start: int, length: int) -> None:
    f = await asyncio.to_thread(open, file, "rb")
    try:
        await asyncio.to_thread(f.seek, start)
        left = length
        while left > 0:
            chunk = await asyncio.to_thread(f.read, min(CHUNK_BYTES, left))
            if not chunk:  # the file shrank under us: end the body here
                break
            left -= len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": left > 0})
        if left > 0:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        await asyncio.to_thread(f.close)


#: The process's media server: the app mounts it, the pages register files with it.
MEDIA = MediaServer()


def media_fragment(start_s: float, end_s: float | None) -> str:
    """The media-fragment (``#t=start,end``) that makes a browser play just a clip's window."""
    if end_s is None or not end_s > start_s:
        return f"t={max(0.0, start_s):.3f}"
    return f"t={max(0.0, start_s):.3f},{end_s:.3f}"
