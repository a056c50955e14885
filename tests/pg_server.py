"""A throw-away PostgreSQL server for the tests: a temporary cluster from the Debian (or PATH) binaries, no Docker.

``PgServer.start()`` runs ``initdb`` into a fresh temporary folder and ``pg_ctl start`` on it; the server
listens only on a unix socket in that folder (no TCP port, so parallel test runs never collide), trusts
local connections, and is stopped with ``pg_ctl stop -m immediate`` and deleted by ``stop()``.
``new_database()`` creates an empty database (from ``template0``) and returns its SQLAlchemy URL, so each
test gets its own.

initdb and postgres refuse to run as root: when the tests run as root, the server runs as the ``postgres``
system user (created by Debian's ``postgresql`` package; ``nobody`` otherwise), through ``subprocess``'s
``user=``/``group=``, in a folder owned by that user. The test process (root) still reaches the socket.

Speed over crash safety of the *server*: ``fsync=off`` and ``initdb --no-sync``. That does not weaken what the
tests check: they kill client processes (SIGKILL of a writer), never the server or the machine, and a
commit that returned is in the server's WAL (``synchronous_commit=on``, the default) whether or not the WAL
was fsynced.

``find_binaries()`` returns None when PostgreSQL is not installed (``scripts/setup.sh`` installs it); the
fixture then skips with that reason.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

SUPERUSER = "selavi"
START_TIMEOUT_S = 60


def find_binaries() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, else the newest /usr/lib/postgresql/*/bin."""
    on_path = shutil.which("initdb")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += [Path(p) for p in sorted(versions, key=lambda p: _version(p), reverse=True)]
    for d in candidates:
        if (d / "initdb").is_file() and (d / "pg_ctl").is_file() and (d / "postgres").is_file():
            return d
    return None


def _version(path: str) -> tuple[int, ...]:
    name = Path(path).parent.name
    return tuple(int(x) for x in name.split(".") if x.isdigit()) or (0,)


def _server_user() -> pwd.struct_passwd | None:
    """Who runs the server: ourselves, or an unprivileged system user when we are root (None: nobody found)."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    return None


class PgServer:
    """One temporary PostgreSQL cluster. ``start()`` raises RuntimeError with the server's log if it fails."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.user = _server_user()
        if self.user is None:
            raise RuntimeError("running as root and no unprivileged user (postgres, nobody) to run PostgreSQL as")
        self.root = Path(tempfile.mkdtemp(prefix="selavi-pg-"))  # short: a unix socket path has ~100 characters
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._names = itertools.count()
        self.started = False

    def _run(self, *argv: str, timeout: float = START_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        kw: dict[str, Any] = {}
        if os.geteuid() == 0:
            assert self.user is not None
            kw = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        env = {**os.environ, "LC_ALL": "C", "HOME": str(self.root)}
        return subprocess.run(
            [str(self.bindir / argv[0]), *argv[1:]], capture_output=True, text=True, timeout=timeout,
            cwd=self.root, env=env, check=False, **kw,
        )  # fmt: skip

    def start(self) -> PgServer:
        assert self.user is not None
        os.chmod(self.root, 0o700)
        os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        init = self._run(
            "initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stdout}{init.stderr}")
        options = (
            f"-k {self.root} -c listen_addresses='' -c fsync=off -c full_page_writes=off "
            "-c max_connections=200 -c shared_buffers=32MB"
        )
        started = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")
        self.started = True  # even a failed start may have left a postmaster behind: stop() tries
        if started.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {started.stdout}{started.stderr}\n{self.server_log()}")
        return self

    def server_log(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of ``database`` over the unix socket (psycopg takes a folder as ``host``)."""
        return f"postgresql+psycopg://{SUPERUSER}@/{database}?host={self.root}"

    def new_database(self) -> str:
        """A fresh, empty database (``CREATE DATABASE ... TEMPLATE template0``); its SQLAlchemy URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(host=str(self.root), user=SUPERUSER, dbname="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def stop(self) -> None:
        """``pg_ctl stop -m immediate`` (no shutdown checkpoint: the data is thrown away), then delete it all."""
        try:
            if self.started and (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            self.started = False
            shutil.rmtree(self.root, ignore_errors=True)


class StoreBackend:
    """Where a test's label store lives: ``sqlite`` (the default file, RUN_DIR/labels.sqlite) or ``postgresql``
    (a fresh database of the session's server). ``open`` is ``LabelStore.open`` with that store."""

    def __init__(self, name: str, url: str | None):
        self.name = name
        self.url = url  # None: the SQLite default in the run folder

    def open(self, target: Any, **kw: Any) -> Any:
        from selavi_core.labels import LabelStore

        if self.url is not None:
            kw.setdefault("store", self.url)
        return LabelStore.open(target, **kw)

    def store_args(self) -> list[str]:
        """The CLI arguments that choose this store (none for the default)."""
        return [] if self.url is None else ["--store", self.url]

    def __repr__(self) -> str:
        return f"StoreBackend({self.name})"
