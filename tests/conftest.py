"""Shared pytest fixtures. Media fixtures are real files encoded by tests/media_factory.py.

Session-scoped so that each file is encoded once per test run; tests must not modify them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from media_factory import make_bad_media_folder, make_video
from pg_server import PgServer, StoreBackend, find_binaries


@pytest.fixture(scope="session")
def bad_media_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """(root, {relative path: "ok" or expected reason keyword}) of good and broken media files."""
    root = tmp_path_factory.mktemp("bad_media")
    return root, make_bad_media_folder(root)


@pytest.fixture(scope="session")
def av_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s, 25 fps, 160x120 H.264 + 24 kHz mono AAC MP4 (seed 0)."""
    return make_video(tmp_path_factory.mktemp("av_clip") / "clip.mp4", duration=2.0, fps=25, size=(160, 120))


@pytest.fixture(scope="session")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 s, 30 fps, 128x96 H.264 (keyframe every 30 frames) + 24 kHz mono AAC MP4 (seed 3)."""
    path = tmp_path_factory.mktemp("long_clip") / "long.mp4"
    return make_video(path, duration=8.0, fps=30, size=(128, 96), seed=3, gop=30)


@pytest.fixture(scope="session")
def studio_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(catalog_dir, run_dir) of a 48-clip, 3-head, K=4 run with real previews (tests/studio_fixtures.py)."""
    from studio_fixtures import make_studio_run

    return make_studio_run(tmp_path_factory.mktemp("studio"))


@pytest.fixture()
def studio_run_copy(studio_run: tuple[Path, Path], tmp_path: Path) -> Path:
    """A private copy of studio_run's run folder, without the label store, map and montages tests write into it."""
    import shutil

    dst = tmp_path / "run"
    shutil.copytree(studio_run[1], dst, ignore=shutil.ignore_patterns("labels.sqlite*", "map", "montages"))
    return dst


@pytest.fixture()
def one_torch_thread():
    """Tiny models gain nothing from a second thread, and on a busy 2-core machine OpenMP's spinning threads
    made them up to 100x slower (0.06 s vs 2-7 s per step), so model unit tests run on one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 real 2 s H.264/AAC clips of two visual/audio patterns, ingested through the CLI (tests/tiny_training.py)."""
    from tiny_training import make_tiny_catalog

    return make_tiny_catalog(tmp_path_factory.mktemp("tiny_src"), tmp_path_factory.mktemp("tiny_catalog"))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A temporary PostgreSQL server for the whole session (tests/pg_server.py), stopped at the end even on failure.

    Skipped, with the reason, when PostgreSQL is not installed or cannot run here; with SELAVI_REQUIRE_POSTGRES=1
    (scripts/test.sh, after setup.sh installed it) that is a failure instead."""
    bindir = find_binaries()
    problem = None
    if bindir is None:
        problem = "PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin); scripts/setup.sh installs it"
    else:
        try:
            server = PgServer(bindir)
        except RuntimeError as err:
            problem = f"cannot run a PostgreSQL server here: {err}"
    if problem is not None:
        if os.environ.get("SELAVI_REQUIRE_POSTGRES") == "1":
            pytest.fail(problem)
        pytest.skip(problem)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_backend(request: pytest.FixtureRequest) -> StoreBackend:
    """The label store's backend: SQLite (RUN_DIR/labels.sqlite) or a fresh database on the session's PostgreSQL."""
    if request.param == "sqlite":
        return StoreBackend("sqlite", None)
    server: PgServer = request.getfixturevalue("pg_server")
    return StoreBackend("postgresql", server.new_database())
