"""Which run folders the Studio shows, and the short names that deep links use (``?run=NAME``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: ``selavi app RUN_DIR ...`` passes its run folders to the Streamlit process in this variable,
#: separated by ``os.pathsep``: an environment variable reaches every page script (and AppTest),
#: which script arguments after ``--`` would not.
RUNS_ENV = "SELAVI_RUNS"
#: ``selavi app --store URL`` passes the label store's URL (a team's PostgreSQL, or a SQLite file) the same way;
#: unset, each run keeps its labels in ``RUN_DIR/labels.sqlite``. An environment variable, not an argument:
#: the URL (which may hold a password) never appears in a process list.
STORE_ENV = "SELAVI_STORE"


@dataclass(frozen=True)
class RunRef:
    name: str  # unique, URL-safe-ish name shown in the run picker and used in ``?run=``
    path: Path


def run_refs(paths: list[str | os.PathLike]) -> list[RunRef]:
    """Name each run by its folder name, adding the parent's name (then a number) when names collide."""
    resolved = [Path(p).expanduser().resolve() for p in paths]
    names: list[str] = []
    for p in resolved:
        name = p.name or str(p)
        if name in names:
            name = f"{p.parent.name}-{p.name}"
        base, i = name, 2
        while name in names:
            name, i = f"{base}-{i}", i + 1
        names.append(name)
    return [RunRef(n, p) for n, p in zip(names, resolved, strict=True)]


def runs_from_env(environ: dict[str, str] | None = None) -> list[RunRef]:
    env = os.environ if environ is None else environ
    raw = env.get(RUNS_ENV, "")
    return run_refs([p for p in raw.split(os.pathsep) if p.strip()])


def runs_to_env(paths: list[str | os.PathLike]) -> str:
    return os.pathsep.join(str(Path(p).expanduser().resolve()) for p in paths)


def store_from_env(environ: dict[str, str] | None = None) -> str | None:
    """The label store every run of this Studio uses (``--store``), or None for each run's own SQLite file."""
    env = os.environ if environ is None else environ
    return env.get(STORE_ENV, "").strip() or None


def run_stamp(run_dir: str | os.PathLike) -> float:
    """When the run folder was last (re)written (its run.json's mtime; 0 when unreadable): a cache key that
    makes a retrained run load afresh."""
    try:
        return (Path(run_dir) / "run.json").stat().st_mtime
    except OSError:
        return 0.0
