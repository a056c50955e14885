"""The browsing rules the pages apply (selavi_core.studio.browse) and the Overview's training view
(selavi_core.studio.training), on a small real run and real training logs; expected values are computed
here from the run's files and by hand, not by the Studio."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from selavi_core.config import DIAGNOSTICS
from selavi_core.labels import LabelStore
from selavi_core.studio import open_run
from selavi_core.studio.browse import (
    MAX_SPLIT_PARTS,
    MEMBER_ORDERS,
    clip_caption,
    clip_files,
    clip_in_cluster,
    cluster_choice_label,
    cluster_sorts,
    descending_by_default,
    dumping_grounds,
    filter_clusters_by_labels,
    has_human_labels,
    index_columns,
    label_count,
    label_mask,
    member_captions,
    member_order,
    sample_captions,
    similar_captions,
    size_facts,
    sort_clusters,
    split_parts_max,
    start_clip,
)
from selavi_core.studio.labelling import NO_LABEL, index_with_names, label_sample
from selavi_core.studio.runs import run_stamp
from selavi_core.studio.training import training_view
from selavi_core.training.diagnostics import LOG_NAME, assess_training, read_train_log


@pytest.fixture()
def run_dir(studio_run_copy):
    return studio_run_copy


@pytest.fixture()
def sr(run_dir):
    return open_run(run_dir)


@pytest.fixture()
def joint(run_dir):
    return np.load(run_dir / "assignments" / "joint.npy")


def _index(**cols) -> pd.DataFrame:
    df = pd.DataFrame(cols)
    df.index.name = "cluster"
    return df


# ---- the cluster index ------------------------------------------------------------------------------------


def test_sort_choices_need_ground_truth_for_purity_and_entropy():
    assert list(cluster_sorts(True)) == ["size", "purity", "entropy", "A/V agreement", "mean confidence",
                                         "cluster id", "human name"]  # fmt: skip
    assert list(cluster_sorts(False)) == ["size", "A/V agreement", "mean confidence", "cluster id", "human name"]
    assert cluster_sorts(True)["cluster id"] is None and cluster_sorts(True)["human name"] == "name"
    assert [s for s in cluster_sorts(True) if not descending_by_default(s)] == ["entropy", "cluster id", "human name"]


def test_sort_clusters_stable_missing_last_and_by_id():
    idx = _index(size=[3, 9, 3, 0], entropy=[0.5, np.nan, 0.1, np.nan], name=["b", None, "a", None])
    assert sort_clusters(idx, "size", True).index.tolist() == [1, 0, 2, 3]  # ties keep id order
    assert sort_clusters(idx, "size", False).index.tolist() == [3, 0, 2, 1]
    assert sort_clusters(idx, "entropy", False).index.tolist() == [2, 0, 1, 3]  # NaN last either way
    assert sort_clusters(idx, "entropy", True).index.tolist() == [0, 2, 1, 3]
    assert sort_clusters(idx, "name", False).index.tolist() == [2, 0, 1, 3]
    assert sort_clusters(idx, None, False).index.tolist() == [0, 1, 2, 3]
    assert sort_clusters(idx, None, True).index.tolist() == [3, 2, 1, 0]


def test_index_columns_and_choice_labels(sr):
    idx = sr.cluster_index(0)  # the fixture's catalog has ground truth
    assert index_columns(idx) == ["size", "av_agreement", "mean_confidence", "majority", "purity", "entropy"]
    named = idx.copy()
    named.insert(0, "name", [None] * len(idx))
    named.loc[1, "name"] = "dog barking"
    named["parts"] = None
    assert index_columns(named) == ["name", "size", "av_agreement", "mean_confidence", "majority", "purity",
                                    "entropy", "parts"]  # fmt: skip
    sizes = np.bincount(np.load(sr.run.dir / "assignments" / "joint.npy")[:, 0], minlength=sr.k)
    assert cluster_choice_label(named, 1) == f"1 · dog barking  ({sizes[1]:,} clips)"
    assert cluster_choice_label(named, 0) == f"0  ({sizes[0]:,} clips)"
    assert cluster_choice_label(idx, 2) == f"2  ({sizes[2]:,} clips)"


def test_label_filter_keeps_clusters_with_such_members(run_dir, sr, joint):
    ids = pd.read_parquet(run_dir / "clips.parquet")["clip_id"].astype(str).tolist()
    with LabelStore.open(run_dir) as store:
        assert not has_human_labels(store.effective_labels(0)) and not has_human_labels(None)
        store.rename_cluster(0, "1", "dog", annotator="ana", expected_version=store.version())
        first_of_2 = int(np.flatnonzero(joint[:, 0] == 2)[0])
        store.override_clips([ids[first_of_2]], "cat", annotator="ana", head=0, expected_version=store.version())
        labels = store.effective_labels(0)
        names = store.clusters(0)
    assert has_human_labels(labels)
    idx = index_with_names(sr.cluster_index(0), names)
    assert filter_clusters_by_labels(idx, labels, []).index.tolist() == idx.index.tolist()
    assert filter_clusters_by_labels(idx, labels, ["dog"]).index.tolist() == [1]
    assert filter_clusters_by_labels(idx, labels, ["cat", "dog"]).index.tolist() == [1, 2]
    # unlabelled members: every cluster but 1, whose members all take its name (2 keeps its other members)
    unlabelled = sorted(set(joint[:, 0].tolist()) - {1})
    assert filter_clusters_by_labels(idx, labels, [NO_LABEL]).index.tolist() == unlabelled
    # the filter keeps the sort order it is given
    desc = sort_clusters(idx, None, True)
    assert filter_clusters_by_labels(desc, labels, ["cat", "dog"]).index.tolist() == [2, 1]

    assert label_count(labels, "dog") == int((joint[:, 0] == 1).sum())
    assert label_count(labels, "cat") == 1
    assert label_count(labels, NO_LABEL) == len(ids) - label_count(labels, "dog") - 1
    sample = label_sample(labels, "cat", 5)
    assert sample_captions(sample) == [f"{ids[first_of_2]} · own"]
    sample = label_sample(labels, "dog", 2)
    assert sample_captions(sample) == [f"{c} · cluster 1" for c in sample["clip_id"]]


def test_label_mask_with_and_without_the_no_label_choice():
    human = pd.Series(["dog", None, "cat", "dog", None], dtype=object)
    assert label_mask(human, ["dog"]).tolist() == [True, False, False, True, False]
    assert label_mask(human, ["cat", NO_LABEL]).tolist() == [False, True, True, False, True]
    assert label_mask(human, []).tolist() == [False] * 5


def test_dumping_grounds_and_size_facts():
    idx = _index(size=[50, 30, 0, 20], share=[0.5, 0.3, 0.0, 0.2], prior=[0.3, 0.2, 0.1, 0.4])
    assert dumping_grounds(idx) == []  # 0.5 is not more than twice the largest target (0.4)
    idx = _index(size=[85, 5, 0, 10], share=[0.85, 0.05, 0.0, 0.10], prior=[0.4, 0.3, 0.2, 0.1])
    assert dumping_grounds(idx) == [0]
    assert size_facts(idx) == {"empty": 1, "largest": 85, "median": 7}  # median of 0, 5, 10, 85 is 7.5


def test_dumping_grounds_on_a_real_run(sr, joint):
    for h in range(sr.heads):
        share = np.bincount(joint[:, h], minlength=sr.k) / len(joint)
        prior = np.load(sr.run.dir / "priors.npy")[h]
        expected = np.flatnonzero(share > 2 * (prior / prior.sum()).max()).tolist()
        assert dumping_grounds(sr.cluster_index(h)) == expected


def test_split_parts_are_between_two_and_twelve():
    clusters = pd.DataFrame({"cluster": ["0", "0.1", "0.2", "3"], "size": [40, 2, 38, 3]})
    assert split_parts_max(clusters, "0") == MAX_SPLIT_PARTS == 12
    assert split_parts_max(clusters, "0.1") == 2
    assert split_parts_max(clusters, "3") == 3


# ---- members and clips ------------------------------------------------------------------------------------


def test_member_order_and_captions(sr):
    assert [member_order(c) for c in MEMBER_ORDERS] == ["most", "least"]
    assert member_order(None) == "most"
    members = sr.member_table(0, 1, order="least", page_size=3)
    cat = pd.read_parquet(Path(sr.run.meta.catalog_dir) / "clips.parquet").set_index("clip_id")
    expected = [f"{c} · {conf:.2f}" + (f" · {cat.at[c, 'label']}" if isinstance(cat.at[c, "label"], str) else "")
                for c, conf in zip(members["clip_id"], members["confidence"], strict=True)]  # fmt: skip
    assert member_captions(members) == expected
    assert member_captions(members.drop(columns="label")) == [f"{c} · {x:.2f}" for c, x in
                                                              zip(members["clip_id"], members["confidence"], strict=True)]  # fmt: skip


def test_clip_in_cluster_start_clip_and_caption(sr, joint):
    row = int(np.flatnonzero(joint[:, 1] == 2)[0])
    assert clip_in_cluster(sr, 1, 2, row) == row
    assert clip_in_cluster(sr, 1, int(joint[row, 1]) + 1, row) is None
    assert clip_in_cluster(sr, 1, 2, None) is None

    conf = np.load(sr.run.dir / "assignments" / "confidence.npy")[:, 0]
    largest = int(np.bincount(joint[:, 0], minlength=sr.k).argmax())
    members = np.flatnonzero(joint[:, 0] == largest)
    assert start_clip(sr, 0) == int(members[np.argmax(conf[members])])

    video = np.load(sr.run.dir / "assignments" / "video.npy")[:, 1]
    audio = np.load(sr.run.dir / "assignments" / "audio.npy")[:, 1]
    confidence = np.load(sr.run.dir / "assignments" / "confidence.npy")[:, 1]
    cid = str(sr.clip_ids[row])
    cat = pd.read_parquet(Path(sr.run.meta.catalog_dir) / "clips.parquet").set_index("clip_id")
    label, file = cat.at[cid, "label"], Path(cat.at[cid, "path"]).name  # the file name next to the opaque id
    assert clip_caption(sr, row) == f"`{cid}` · file `{file}` · ground truth **{label}**"
    assert clip_files(sr, [row, 0]) == [file, Path(cat.at[str(sr.clip_ids[0]), "path"]).name]
    assert clip_caption(sr, row, 1) == (
        f"`{cid}` · file `{file}` · ground truth **{label}** · cluster 2 of head 1 (confidence {confidence[row]:.2f}; "
        f"video alone → {video[row]}, audio alone → {audio[row]})"
    )


def test_similar_captions():
    nn = pd.DataFrame({"clip_id": ["a", "b"], "similarity": [0.987, 0.5], "label": ["dog", None]})
    assert similar_captions(nn) == ["a · 0.99 · dog", "b · 0.50"]
    assert similar_captions(nn.drop(columns="label")) == ["a · 0.99", "b · 0.50"]


def test_run_stamp(run_dir, tmp_path):
    assert run_stamp(run_dir) == (run_dir / "run.json").stat().st_mtime
    assert run_stamp(tmp_path / "nowhere") == 0.0


# ---- the Overview's training view -------------------------------------------------------------------------


def test_training_view_of_a_recorded_log(tmp_path):
    data = Path(__file__).resolve().parent / "data"
    run = tmp_path / "run"
    run.mkdir()
    assert training_view(run) is None  # a run made by `selavi assign` has no log
    shutil.copy(data / "train_log_avdigits_lr_too_high.jsonl", run / LOG_NAME)
    priors = np.array([[4.0, 3, 1, 1, 1, 1, 1, 1, 1, 1], [2.0, 1, 1, 1, 1, 1, 1, 1, 1, 1]])
    np.save(run / "priors.npy", priors)
    view = training_view(run)
    assert view is not None and view.curves.k == 10
    assert view.random_loss == pytest.approx(math.log(10))
    chance = 1 / 10
    assert view.agreement_line == pytest.approx(
        min(DIAGNOSTICS.agree_chance_multiple * chance, chance + DIAGNOSTICS.agree_min_margin * (1 - chance))
    )
    target = np.mean([4 / 15, 2 / 11])
    assert view.largest_target == pytest.approx(target)
    assert view.swallow_line == pytest.approx(target + DIAGNOSTICS.swallow_fraction * (1 - target))
    expected = assess_training(read_train_log(run / LOG_NAME, clusters=10, prior_largest_share=target))
    assert [w.code for w in view.warnings] == [w.code for w in expected] and view.warnings
