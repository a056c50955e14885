"""selavi_core.io: atomic writes leave the old file or the new one, never a half; file hashes are stable."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from selavi_core.io import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    file_hash,
    pid_alive,
    remove_orphan_temps,
    replace_tree,
    temp_sibling,
)

#: A child that starts an atomic write into argv[1], writes half of it and is killed: what SIGKILL leaves.
KILLED_WRITER = """
import os, signal, sys
from selavi_core.io import atomic_write
with atomic_write(sys.argv[1], durable=False) as tmp:
    tmp.write_bytes(b"half a file")
    print(tmp.name, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def killed_write(final: Path) -> Path:
    """Run ``KILLED_WRITER`` for ``final``; the orphaned temporary it left (its writer's pid is dead)."""
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}
    child = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(final)], env=env, capture_output=True, text=True, timeout=120
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    orphan = final.parent / child.stdout.strip()
    assert orphan.is_file() and not final.exists()
    return orphan


def age(path: Path, seconds: float) -> Path:
    t = time.time() - seconds
    os.utime(path, (t, t))
    return path


def test_file_hash_is_sha256_of_the_bytes(tmp_path):
    p = tmp_path / "blob.bin"
    data = bytes(range(256)) * 10_000  # several read chunks
    p.write_bytes(data)
    full = hashlib.sha256(data).hexdigest()
    assert file_hash(p) == full[:16]  # the short form stored in run.json / catalog.json
    assert file_hash(p, length=None) == full
    assert file_hash(p, chunk=7) == full[:16]


def test_atomic_write_replaces_and_keeps_the_suffix(tmp_path):
    out = tmp_path / "arr.npy"
    out.write_bytes(b"old")
    with atomic_write(out) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.suffix == ".npy"
        assert out.read_bytes() == b"old"  # readers see the old file while the new one is written
        np.save(tmp, np.arange(3))
    assert np.load(out).tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arr.npy"]


def test_atomic_write_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    out = tmp_path / "meta.json"
    atomic_write_text(out, '{"v": 1}\n')
    with pytest.raises(RuntimeError), atomic_write(out) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert out.read_text() == '{"v": 1}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.json"]


def test_atomic_write_bytes_and_text_durable_or_not(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01", durable=False)
    atomic_write_text(tmp_path / "b.txt", "x\r\ny")
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_bytes() == b"x\r\ny"  # newlines as given


def test_replace_tree_swaps_a_whole_folder(tmp_path):
    out = tmp_path / "tree"
    (out / "old").mkdir(parents=True)
    staged = tmp_path / ".staged"
    (staged / "new").mkdir(parents=True)
    replace_tree(staged, out)
    assert [p.name for p in out.iterdir()] == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tree"]


def test_remove_orphan_temps_takes_what_killed_writers_left_and_nothing_else(tmp_path):
    dead = age(killed_write(tmp_path / "clips.parquet"), 120)  # a dead writer, a minute since its last write
    dead_pid = int(dead.name.split(".")[-4])
    assert not pid_alive(dead_pid) and pid_alive(os.getpid())
    fresh_dead = killed_write(tmp_path / "index.parquet")  # a dead writer, but just now: maybe another machine's
    mine = temp_sibling(tmp_path / "a.mp4")  # this process's, so a live writer
    mine.write_bytes(b"being written")
    age(mine, 120)
    old_mine = temp_sibling(tmp_path / "b.jpg")
    old_mine.write_bytes(b"x")
    age(old_mine, 7200)  # nothing written for two hours: an orphan whatever the pid says
    part = tmp_path / f".c.{dead_pid}.0123abcd.part.mp4"  # what earlier versions named their temporaries
    part.write_bytes(b"x")
    age(part, 120)
    keep = [tmp_path / "clips.parquet.tmp", tmp_path / ".hidden", tmp_path / f"d.{dead_pid}.0123abcd.tmp.mp4"]
    for p in keep:
        p.write_bytes(b"not a temporary")
        age(p, 7200)
    folder = tmp_path / f".e.{dead_pid}.0123abcd.tmp"  # a folder is never a temporary of atomic_write
    folder.mkdir()
    age(folder, 7200)

    assert remove_orphan_temps(tmp_path, max_age_s=3600, dead_pid_age_s=60) == 3
    assert not dead.exists() and not old_mine.exists() and not part.exists()
    assert fresh_dead.exists() and mine.exists() and folder.is_dir() and all(p.exists() for p in keep)
    assert remove_orphan_temps(tmp_path / "nothing-here", max_age_s=3600, dead_pid_age_s=60) == 0
