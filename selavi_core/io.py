"""Writing files so that readers never see half of one, and hashing files for provenance.

Every output of SeLaVi Studio (catalogs, runs, checkpoints, exports, previews, caches) is read by
another process, maybe while it is being written, maybe after a crash. So nothing is written under
its final name: it is written to a hidden temporary sibling (same folder, so same file system) and
renamed onto the final name with ``os.replace``, which is atomic on POSIX and Windows. A reader sees
the old file or the new one, never a mixture, and an interrupted write leaves only a hidden
temporary that is removed on the way out.

Durability is one step more: after a power cut the rename may be on disk while the data is not
(a complete-looking file of zeros). ``durable=True`` (the default) therefore fsyncs the file before
the rename and the folder after it (the rename is an entry in the folder). Rebuildable caches
(previews, map caches) pass ``durable=False``: losing one costs a rebuild, and fsyncing thousands of
small files would cost more.

A process killed in the middle of a write (SIGKILL, a power cut) cannot remove its temporary;
``remove_orphan_temps`` does, at the start of the next run that writes into that folder.

``file_hash`` is the one hash of a file's bytes used in provenance (catalog hash, checkpoint hash,
run hash, export sha256): sha256, hex, by default the first 16 characters.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PathLike = str | os.PathLike

#: Bytes read at a time while hashing.
HASH_CHUNK = 1 << 20
#: Hex characters of ``file_hash`` kept by default (64 bits: plenty to tell files apart in provenance).
HASH_CHARS = 16


def file_hash(path: PathLike, *, length: int | None = HASH_CHARS, chunk: int = HASH_CHUNK) -> str:
    """sha256 of a file's bytes as hex, the first ``length`` characters (all 64 when ``None``).

    The short form identifies catalogs and checkpoints in run metadata and provenance; the full form
    is the checksum an export's sidecar records for its output.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    digest = h.hexdigest()
    return digest if length is None else digest[:length]


def fsync_dir(path: PathLike) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: PathLike) -> None:
    """Flush a closed file's data to disk (before it is renamed into place)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_sibling(path: PathLike) -> Path:
    """A fresh hidden name next to ``path`` that keeps its suffix: ``.clips.<pid>.<rand>.tmp.parquet``.

    Same folder, so the final ``os.replace`` is a rename on one file system; unique per process and
    call, so concurrent writers never share a temporary; the suffix is kept because some writers pick
    the format from it (``np.save`` appends ``.npy`` otherwise, encoders look at ``.mp4``).
    """
    p = Path(path)
    return p.with_name(f".{p.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{p.suffix}")


#: What ``temp_sibling`` names (``.clips.<pid>.<rand>.tmp.parquet``) and what earlier versions named ``.part``
#: (``.clips.<pid>.<rand>.part.parquet``): hidden, the writer's pid, 8 hex characters, then the suffix.
_TEMP_NAME = re.compile(r"^\..+\.(?P<pid>[0-9]+)\.[0-9a-f]{8}\.(?:tmp|part)(?:\.[^.]+)?$")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (True where that cannot be asked safely)."""
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, as another user's
        return True
    return True


def remove_orphan_temps(folder: PathLike, *, max_age_s: float, dead_pid_age_s: float) -> int:
    """Remove the temporaries of atomic writes that killed processes left in ``folder``; how many were removed.

    A temporary is an orphan when nothing has written to it for ``max_age_s`` seconds, or for
    ``dead_pid_age_s`` seconds when the pid in its name is not alive on this machine. The short wait
    spares a writer on another machine sharing the folder (its pid means nothing here; its file is
    still growing); the long one catches orphans whose pid was reused. Only files named like
    ``temp_sibling``'s (or the ``.part`` ones of earlier versions) are touched; subfolders are not.
    """
    removed = 0
    now = time.time()
    try:
        entries = os.scandir(str(folder))
    except OSError:  # no folder yet: nothing to clean
        return 0
    with entries:
        for entry in entries:
            m = _TEMP_NAME.match(entry.name)
            if m is None or not entry.is_file(follow_symlinks=False):
                continue
            try:
                age = now - entry.stat(follow_symlinks=False).st_mtime
            except OSError:  # gone meanwhile: its writer finished
                continue
            if age >= max_age_s or (age >= dead_pid_age_s and not pid_alive(int(m["pid"]))):
                try:
                    os.unlink(entry.path)
                except OSError:
                    continue
                removed += 1
    return removed


@contextmanager
def atomic_write(path: PathLike, *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling path to write ``path``'s new content to; on success it replaces ``path``.

    ``with atomic_write(out) as tmp: pq.write_table(table, tmp)``. On an exception the temporary is
    removed and ``path`` is untouched. ``durable``: fsync the file, rename, fsync the folder.
    """
    final = Path(path)
    tmp = temp_sibling(final)
    try:
        yield tmp
        if durable:
            fsync_file(tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)  # only still there when something failed
    if durable:
        fsync_dir(final.parent)


def atomic_write_bytes(path: PathLike, data: bytes, *, durable: bool = True) -> Path:
    """Replace ``path`` by ``data`` atomically (see ``atomic_write``)."""
    with atomic_write(path, durable=durable) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: PathLike, text: str, *, encoding: str = "utf-8", durable: bool = True) -> Path:
    """Replace ``path`` by ``text`` atomically; newlines are written as given (no platform translation)."""
    with atomic_write(path, durable=durable) as tmp, open(tmp, "w", encoding=encoding, newline="") as f:
        f.write(text)
    return Path(path)


def replace_tree(staged: PathLike, out: PathLike) -> None:
    """Rename a finished folder (or file) ``staged`` onto ``out``, replacing what is there.

    A folder cannot be renamed onto a non-empty folder, so the old tree is first renamed aside and
    removed after: ``out`` holds the old complete tree, then (for an instant) nothing, then the new one,
    never a mixture of the two.
    """
    staged, out = Path(staged), Path(out)
    if staged.is_dir() and out.exists():
        aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, aside / "tree")
        os.replace(staged, out)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(staged, out)
