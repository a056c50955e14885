"""``selavi ingest`` end to end on real media files (encoded by tests/media_factory.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from media_factory import make_video
from test_io import age, killed_write

from selavi_core.catalog import (
    CATALOG_COLUMNS,
    ClipSpec,
    build_catalog,
    catalog_hash,
    load_catalog,
    ok_clips,
    read_layout,
)
from selavi_core.cli import main
from selavi_core.errors import CatalogError


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SELAVI_NO_PROGRESS", "1")


def ingest(*args: str | os.PathLike) -> int:
    return main(["ingest", *map(str, args)])


def meta(cat: Path) -> dict:
    return json.loads((cat / "catalog.json").read_text())


@pytest.fixture(scope="module")
def small_av(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real 2-s clips in class folders plus a labels.csv with windows, a missing file and extras."""
    root = tmp_path_factory.mktemp("small_av")
    make_video(root / "seven" / "a.mp4", duration=2.0, fps=10, size=(64, 48), seed=1)
    make_video(root / "three" / "b.mp4", duration=2.0, fps=10, size=(64, 48), seed=2, acodec=None)
    (root / "labels.csv").write_text(
        "path,label,start_s,end_s,split,speaker,clip_id\n"
        "seven/a.mp4,seven,,,train,jackson,s1\n"
        "seven/a.mp4,seven,0.5,1.0,train,jackson,s2\n"
        "three/b.mp4,three,1.5,9,test,theo,s3\n"
        "three/b.mp4,three,3,4,test,theo,s4\n"
        "gone/c.mp4,nine,,,train,nicolas,s5\n"
    )
    return root


# ------------------------------------------------------------------------------------------ bad folder


def test_folder_ingest_of_good_and_broken_media(
    bad_media_dir: tuple[Path, dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, expected = bad_media_dir
    cat = tmp_path / "cat"
    assert ingest(root, "--format", "folder", "--out", cat, "--workers", "2") == 0
    out = capsys.readouterr().out
    n_ok = sum(v == "ok" for v in expected.values())
    assert f"{len(expected)} clips: {n_ok} ok, {len(expected) - n_ok} error" in out

    df = load_catalog(cat)
    assert list(df.columns[: len(CATALOG_COLUMNS)]) == list(CATALOG_COLUMNS)
    rel = {Path(p).relative_to(root).as_posix(): i for i, p in enumerate(df["path"])}
    assert set(rel) == set(expected)  # every file is a row, nothing else is
    for name, keyword in expected.items():
        row = df.iloc[rel[name]]
        if keyword == "ok":
            assert row["status"] == "ok" and pd.isna(row["error"]), (name, row["error"])
            assert row["start_s"] == 0.0 and row["end_s"] == pytest.approx(2.0, abs=0.1)
            assert row["duration_s"] == pytest.approx(2.0, abs=0.1) and row["fps"] == pytest.approx(25)
            assert (row["width"], row["height"]) == (160, 120)
            assert bool(row["has_audio"]) is (name != "no_audio.mp4")
        else:
            assert row["status"] == "error" and keyword in row["error"], (name, row["error"])
            assert pd.isna(row["duration_s"]) and pd.isna(row["width"])
        assert pd.isna(row["label"]) and pd.isna(row["split"])
    # the summary groups reasons with an example path
    assert re.search(r"1\s+no video stream\s+e\.g\. .*audio_only\.mp4", out)

    # ids: 16 hex chars, unique, with neither a file stem nor a folder name inside
    ids = df["clip_id"].tolist()
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)
    stems = [Path(p).stem for p in expected]
    words = {w.lower() for s in stems for w in re.split(r"[/_. ]", s) if len(w) >= 3 and re.search(r"[^0-9a-f]", w)}
    assert not any(w in i for i in ids for w in words)
    assert not any(s.encode()[:3].hex() in i for i in ids for s in stems)  # nor a hex-encoded name

    info = meta(cat)
    assert info["format"] == "folder" and info["source"] == str(root)
    assert info["counts"]["clips"] == len(expected) and info["counts"]["ok"] == n_ok
    assert info["catalog_hash"] == catalog_hash(cat)
    assert info["probe"]["probed"] == len(expected) and info["probe"]["cached"] == 0
    assert (cat / "probe_cache.parquet").is_file()
    assert not (cat / "probe_cache.journal.jsonl").exists()  # folded into the cache
    assert not [p for p in cat.iterdir() if p.name.endswith(".tmp")]

    # a re-run: same ids, same bytes, and nothing is probed again
    first_hash = catalog_hash(cat)
    assert ingest(root, "--format", "folder", "--out", cat) == 0
    assert load_catalog(cat)["clip_id"].tolist() == ids
    assert catalog_hash(cat) == first_hash
    probe = meta(cat)["probe"]
    assert probe == {"probed": 0, "cached": len(expected), "resumed": 0, "workers": probe["workers"]}
    assert "0 probed" in capsys.readouterr().out


def test_ok_clips_keeps_only_readable_rows(bad_media_dir: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    root, expected = bad_media_dir
    report = build_catalog(read_layout(root, "folder"), tmp_path / "cat", source=root, fmt="folder", workers=2)
    ok = ok_clips(load_catalog(tmp_path / "cat"))
    assert len(ok) == report.n_ok == sum(v == "ok" for v in expected.values())
    assert list(ok.index) == list(range(len(ok))) and (ok["status"] == "ok").all()
    assert sum(report.reasons.values()) == report.n_error == len(expected) - report.n_ok
    assert all(len(report.examples[r]) >= 1 for r in report.reasons)


# ------------------------------------------------------------------------------------------ windows, csv


def test_csv_windows_are_clipped_to_the_file_and_errors_keep_their_labels(small_av: Path, tmp_path: Path) -> None:
    cat = tmp_path / "cat"
    assert ingest(small_av / "labels.csv", "--format", "csv", "--out", cat) == 0
    df = load_catalog(cat)
    got = {r.clip_id: r for r in df.itertuples()}
    assert len(got) == 5

    def none(v: object) -> object:
        return None if pd.isna(v) else v

    rows = sorted(
        (Path(r.path).name, r.start_s, r.end_s, r.label, r.split, r.status, none(r.error), r.speaker, r.extra_clip_id)
        for r in df.itertuples()
    )
    nan = float("nan")
    expected = sorted(
        [
            ("a.mp4", 0.0, 2.0, "seven", "train", "ok", None, "jackson", "s1"),
            ("a.mp4", 0.5, 1.0, "seven", "train", "ok", None, "jackson", "s2"),
            ("b.mp4", 1.5, 2.0, "three", "test", "ok", None, "theo", "s3"),  # clipped to the 2-s file
            ("b.mp4", 3.0, 4.0, "three", "test", "error", "window starts after the end of the file", "theo", "s4"),
            ("c.mp4", nan, nan, "nine", "train", "error", "file not found", "nicolas", "s5"),
        ]
    )
    assert len(rows) == len(expected)
    for g, e in zip(rows, expected, strict=True):
        assert g[0] == e[0] and g[3:] == e[3:]
        for a, b in ((g[1], e[1]), (g[2], e[2])):
            assert (pd.isna(a) and pd.isna(b)) or a == pytest.approx(b, abs=0.05)
    assert df["speaker"].map(type).eq(str).all()
    assert str(df["width"].dtype) == "Int64" and str(df["has_audio"].dtype) == "boolean"


def test_ids_are_relative_to_the_source_so_a_moved_source_keeps_them(small_av: Path, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere" / "data"
    shutil.copytree(small_av, moved)
    assert ingest(small_av, "--format", "tree", "--bare", "--out", tmp_path / "c1") == 0
    assert ingest(moved, "--format", "tree", "--bare", "--out", tmp_path / "c2") == 0
    a, b = load_catalog(tmp_path / "c1"), load_catalog(tmp_path / "c2")
    assert a["clip_id"].tolist() == b["clip_id"].tolist()
    assert a["label"].tolist() == ["seven", "three"]
    assert a["path"].tolist() != b["path"].tolist()


def test_probe_cache_reprobes_only_changed_files(small_av: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(small_av, src)
    specs = read_layout(src, "folder")
    cat = tmp_path / "cat"
    first = build_catalog(specs, cat, source=src, workers=2)
    assert (first.n_probed, first.n_cached) == (2, 0)
    again = build_catalog(specs, cat, source=src, workers=2)
    assert (again.n_probed, again.n_cached) == (0, 2)
    assert again.catalog_hash == first.catalog_hash
    st = (src / "seven" / "a.mp4").stat()
    os.utime(src / "seven" / "a.mp4", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    third = build_catalog(specs, cat, source=src, workers=2)
    assert (third.n_probed, third.n_cached) == (1, 1)
    cache = pd.read_parquet(cat / "probe_cache.parquet")
    assert len(cache) == 2  # the stale entry of a.mp4 was replaced, not kept


#: ``selavi ingest --format folder SOURCE --out CATALOG_DIR`` in a child process whose probes each take 20 ms
#: longer than they do (the real probe still opens every file), so the test can kill it part-way.
_SLOW_INGEST = """
import sys, time
import selavi_core.media as media
real = media.probe
def slow(path):
    time.sleep(0.02)
    return real(path)
media.probe = slow
from selavi_core.cli import main
sys.exit(main(["ingest", sys.argv[1], "--format", "folder", "--out", sys.argv[2], "--workers", "1"]))
"""


def _complete_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def test_a_killed_ingest_resumes_without_reprobing_what_it_did(tmp_path: Path) -> None:
    n = 200
    one = make_video(tmp_path / "one.mp4", duration=1.0, fps=10, size=(48, 32), seed=3)
    src = tmp_path / "src"
    for i in range(n):  # hard links: each name is its own file to the catalog, and is opened to be probed
        (src / f"d{i % 10}").mkdir(parents=True, exist_ok=True)
        os.link(one, src / f"d{i % 10}" / f"c{i:03d}.mp4")
    cat = tmp_path / "cat"
    journal = cat / "probe_cache.journal.jsonl"
    repo = str(Path(__file__).resolve().parents[1])
    env = {
        **os.environ,
        "SELAVI_NO_PROGRESS": "1",
        "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]),
    }
    child = subprocess.Popen([sys.executable, "-c", _SLOW_INGEST, str(src), str(cat)], env=env)
    try:
        deadline = time.monotonic() + 120
        while _complete_lines(journal) < 20:  # the journal reaches the disk while probing goes on
            assert child.poll() is None, f"the ingest ended (exit {child.returncode}) before it could be killed"
            assert time.monotonic() < deadline, "no probe was journalled within 120 s"
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    done = _complete_lines(journal)
    assert 20 <= done < n
    assert not (cat / "clips.parquet").exists() and not (cat / "probe_cache.parquet").exists()
    with open(journal, "a") as f:  # what a kill in the middle of a write leaves: a line cut short
        f.write('{"path": "' + str(src / "d0" / "c000.mp4") + '", "size": 12')
    orphan = age(killed_write(cat / "clips.parquet"), 120)  # and a catalog write killed half-way

    specs = read_layout(src, "folder")
    report = build_catalog(specs, cat, source=src, workers=2)
    assert (report.n_probed, report.n_cached, report.n_resumed) == (n - done, done, done)
    assert f"{n - done} probed, {done} from the probe cache ({done} from an interrupted run)" in report.summary()
    assert not journal.exists()  # folded into the cache
    assert not orphan.exists()
    assert len(pd.read_parquet(cat / "probe_cache.parquet")) == n
    assert meta(cat)["probe"] | {"workers": 2} == {"probed": n - done, "cached": done, "resumed": done, "workers": 2}
    uninterrupted = build_catalog(specs, tmp_path / "fresh", source=src, workers=2)
    assert uninterrupted.catalog_hash == report.catalog_hash  # journalled probes give the same catalog
    again = build_catalog(specs, cat, source=src, workers=2)
    assert (again.n_probed, again.n_cached, again.n_resumed) == (0, n, 0)


def test_catalog_inside_the_source_is_not_ingested_on_a_rerun(small_av: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(small_av, src)
    cat = src / "catalog"
    assert ingest(src, "--format", "folder", "--out", cat) == 0
    shutil.copy(src / "seven" / "a.mp4", cat / "preview.mp4")  # what `selavi previews` would add
    assert ingest(src, "--format", "folder", "--out", cat) == 0
    assert len(load_catalog(cat)) == 2


def test_vggsound_clips_named_in_seconds_and_in_milliseconds(tmp_path: Path) -> None:
    """Public VGG-Sound copies name clips ``<ytid>_<start>_<end>`` in seconds or in milliseconds: both ingest."""
    src = tmp_path / "vgg"
    names = ["a_b-C_30000_40000.mp4", "dEf-_9_000010_000020.mp4", "dog barking/x-y_12.5_22.5.mp4"]
    for i, name in enumerate(names):
        make_video(src / name, duration=1.0, fps=10, size=(48, 32), seed=i)
    (src / "vggsound.csv").write_text(
        "a_b-C,30,playing bagpipes,train\ndEf-_9,10,dog barking,test\nmissing,120,bird,test\n"
    )
    assert ingest(src, "--out", tmp_path / "cat") == 0  # --format auto finds vggsound.csv
    df = load_catalog(tmp_path / "cat").set_index("source_id")
    assert df.loc["a_b-C", ["label", "split", "status", "yt_start_s", "yt_end_s"]].tolist() == [
        "playing bagpipes", "train", "ok", "30", "40",
    ]  # fmt: skip
    assert df.loc["dEf-_9", ["label", "split", "status", "yt_start_s"]].tolist() == ["dog barking", "test", "ok", "10"]
    assert df.loc["x-y", ["status", "yt_start_s", "yt_end_s"]].tolist() == ["ok", "12.5", "22.5"]  # no row: unlabelled
    assert pd.isna(df.loc["x-y", "label"])
    assert df.loc["missing", "status"] == "error" and df.loc["missing", "path"].endswith("missing_000120_000130.mp4")


# ------------------------------------------------------------------------------------------ failures


def test_exit_1_when_no_clip_can_be_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "junk"
    src.mkdir()
    (src / "empty.mp4").write_bytes(b"")
    (src / "words.mkv").write_text("not a video\n" * 10)
    assert ingest(src, "--format", "folder", "--out", tmp_path / "cat") == 1
    assert "none of the 2 clips could be read" in capsys.readouterr().err
    assert (load_catalog(tmp_path / "cat")["status"] == "error").all()
    (tmp_path / "nothing").mkdir()
    assert ingest(tmp_path / "nothing", "--format", "folder", "--out", tmp_path / "cat2") == 1
    assert "no clips found" in capsys.readouterr().err


def test_malformed_source_exits_2_with_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "labels.csv").write_text("path,label\na.mp4,1,extra\n")
    assert ingest(tmp_path, "--out", tmp_path / "cat") == 2  # --format auto finds labels.csv
    err = capsys.readouterr().err
    assert "labels.csv, line 2: 3 fields, but the header has 2" in err and "Traceback" not in err


def test_duplicate_specs_and_missing_catalogs_are_catalog_errors(tmp_path: Path) -> None:
    spec = ClipSpec(path=str(tmp_path / "a.mp4"), start_s=1.0, end_s=2.0)
    with pytest.raises(CatalogError, match=r"listed twice: .*a\.mp4 \(1.0-2.0 s\), entries 1 and 2"):
        build_catalog([spec, ClipSpec(path=spec.path, start_s=1.0, end_s=2.0, label="x")], tmp_path / "c")
    with pytest.raises(CatalogError, match="no clips to catalog"):
        build_catalog([], tmp_path / "c")
    with pytest.raises(CatalogError, match="does not exist; create it with `selavi ingest"):
        load_catalog(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CatalogError, match="not a catalog folder"):
        catalog_hash(tmp_path / "empty")


def test_help_explains_every_format(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["ingest", "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    for fmt in ("tree", "folder", "csv", "vggsound", "ave", "kinetics"):
        assert re.search(rf"^  {fmt}\s", text, re.M), fmt
        assert f"--format {fmt}" in text, fmt
