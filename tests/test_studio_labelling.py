"""The Studio's labelling helpers (selavi_core/studio/labelling.py) on a real run and store, without Streamlit."""

from __future__ import annotations

import csv
import io

import numpy as np
import pandas as pd
import pytest

from selavi_core.config import LABELS
from selavi_core.labels import LabelStore, StaleEditError
from selavi_core.studio import open_run
from selavi_core.studio.labelling import (
    NO_LABEL,
    UNLABELLED_COLOUR,
    clean_annotator,
    clusters_with_labels,
    conflict_message,
    export_download,
    export_file_name,
    human_colours,
    index_with_names,
    label_options,
    label_palette,
    label_sample,
    reset_clips,
)


@pytest.fixture()
def run_dir(studio_run_copy):
    return studio_run_copy


@pytest.fixture()
def store(run_dir):
    with LabelStore.open(run_dir) as s:
        yield s


@pytest.fixture()
def joint(run_dir):
    return np.load(run_dir / "assignments" / "joint.npy")[:, 0]


@pytest.fixture()
def ids(run_dir):
    return pd.read_parquet(run_dir / "clips.parquet")["clip_id"].astype(str).tolist()


def test_clean_annotator():
    assert clean_annotator("  Ana   María ") == "Ana María"
    assert clean_annotator("") is None and clean_annotator("   ") is None and clean_annotator(None) is None
    assert clean_annotator("x" * (LABELS.max_name_length + 1)) is None


def test_reset_clips_lifts_override_and_rejection_of_the_same_clip(store, joint, ids):
    store.rename_cluster(0, 1, "dog", annotator="bob", expected_version=0)
    a, b = [c for c, k in zip(ids, joint, strict=True) if k == 1][:2]
    store.override_clips([a], "cat", annotator="ana", expected_version=store.version())
    store.reject_clips(0, [a, b], annotator="ana", expected_version=store.version())
    seen = store.version()
    before = store.effective_labels(0).set_index("clip_id").loc[[a, b], ["label", "label_source", "rejected"]]
    done = reset_clips(store, 0, [a, b], annotator="ana", expected_version=seen)
    assert len(done) == 1 and store.version() == seen + 1 and store.events()[-1].action == "reset_clips"
    labels = store.effective_labels(0).set_index("clip_id")
    assert labels.loc[[a, b], "label"].tolist() == ["dog", "dog"]
    assert labels.loc[[a, b], "label_source"].tolist() == ["cluster", "cluster"]
    assert reset_clips(store, 0, [a, b], annotator="ana", expected_version=store.version()) == []  # nothing to do
    # one logical edit, one undo: the own label and both rejections come back together
    store.undo("ana")
    after_undo = store.effective_labels(0).set_index("clip_id").loc[[a, b], ["label", "label_source", "rejected"]]
    pd.testing.assert_frame_equal(after_undo, before)
    assert before["label"].tolist() == ["cat", None] and bool(before.loc[b, "rejected"])


def test_reset_clips_detects_someone_elses_edit(store, joint, ids):
    a, b = [c for c, k in zip(ids, joint, strict=True) if k == 2][:2]
    store.override_clips([a], "cat", annotator="ana", expected_version=0)
    store.reject_clips(0, [b], annotator="ana", expected_version=store.version())
    seen = store.version()
    store.override_clips([b], "owl", annotator="bob", expected_version=seen)  # bob, meanwhile, on clip b only
    n = store.version()
    with pytest.raises(StaleEditError) as err:
        reset_clips(store, 0, [a, b], annotator="ana", expected_version=seen)
    assert store.version() == n  # nothing written
    msg = conflict_message(err.value)
    assert "**bob**" in msg and "owl" in msg


def test_filters_samples_and_names(store, run_dir, joint, ids):
    store.rename_cluster(0, 1, "dog", annotator="bob", expected_version=0)
    in2 = [c for c, k in zip(ids, joint, strict=True) if k == 2]
    store.override_clips(in2[:1], "dog", annotator="bob", expected_version=store.version())
    store.label_clips(in2[1:3], "owl", annotator="bob", expected_version=store.version())
    labels = store.effective_labels(0)
    assert clusters_with_labels(labels, ["dog"]).tolist() == [1, 2]
    assert clusters_with_labels(labels, ["owl"]).tolist() == [2]
    unlabelled = sorted({int(k) for c, k in zip(ids, joint, strict=True) if k != 1 and c not in in2[:3]})
    assert clusters_with_labels(labels, [NO_LABEL]).tolist() == unlabelled
    n_dog = int((joint == 1).sum()) + 1
    assert label_options(labels) == ["dog", "owl", NO_LABEL]

    sample = label_sample(labels, "dog", 5, seed=3)
    assert len(sample) == 5 and (sample["label"] == "dog").all()
    assert sample["row"].is_monotonic_increasing
    assert [ids[r] for r in sample["row"]] == sample["clip_id"].tolist()
    assert label_sample(labels, "dog", 5, seed=3).equals(sample)  # the same sample for the same seed
    assert len(label_sample(labels, "dog", 100)) == n_dog

    store.split_cluster(0, 1, k=2, annotator="bob", expected_version=store.version())
    store.rename_cluster(0, "1.b", "puppy", annotator="bob", expected_version=store.version())
    sr = open_run(run_dir)
    index = index_with_names(sr.cluster_index(0), store.clusters(0))
    assert index.loc[1, "name"] == "dog" and index.loc[1, "named_by"] == "bob" and index.loc[0, "name"] is None
    assert index.loc[1, "parts"] == "1.a: dog, 1.b: puppy" and index.loc[0, "parts"] is None
    assert index["size"].tolist() == sr.cluster_index(0)["size"].tolist()


def test_human_colours():
    labels = ["dog", None, "cat", "dog", "owl", None, "dog"]
    colours = human_colours(labels)
    by = {}
    for lab, col in zip(labels, colours, strict=True):
        by.setdefault(lab, set()).add(col)
    assert by[None] == {UNLABELLED_COLOUR} and all(len(v) == 1 for v in by.values())
    assert len({next(iter(v)) for v in by.values()}) == 4
    palette = label_palette([f"l{i}" for i in range(60)])
    assert len(set(palette.values())) == 60 and UNLABELLED_COLOUR not in palette.values()


def test_export_download_matches_the_store(store, joint, ids):
    store.rename_cluster(0, 3, "rain", annotator="bob", expected_version=0)
    store.snapshot("v1", annotator="bob")
    store.override_clips([ids[0]], "thunder", annotator="ana", expected_version=store.version())
    data, prov = export_download(store, "csv", head=0)
    rows = {r["clip_id"]: r for r in csv.DictReader(io.StringIO(data.decode()))}
    labels = store.effective_labels(0).set_index("clip_id")
    assert {c: r["label"] or None for c, r in rows.items()} == labels["label"].to_dict()
    assert prov["counts"]["by_label"] == labels["label"].value_counts().to_dict()
    data_v1, prov_v1 = export_download(store, "csv", head=0, snapshot="v1", only_named=True)
    rows_v1 = list(csv.DictReader(io.StringIO(data_v1.decode())))
    assert {r["label"] for r in rows_v1} == {"rain"} and len(rows_v1) == int((joint == 3).sum())
    assert prov_v1["labels"]["snapshot"] == "v1"
    assert export_file_name("run", "csv", 0) == "run-head0-labels.csv"
    assert export_file_name("run", "labelstudio", 2, "set v3/x") == "run-head2-set_v3_x-labels.labelstudio.json"
