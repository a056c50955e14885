"""selavi_core.io: atomic writes leave the old file or the new one, never a half; file hashes are stable."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from selavi_core.io import atomic_write, atomic_write_bytes, atomic_write_text, file_hash, replace_tree


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
