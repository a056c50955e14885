"""Labels bound to what they name: cluster names follow their clips across a retrain or re-assign, per-clip
labels follow the run folder across a catalog change, and an unknown run key is refused."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from label_fixtures import make_label_run

from selavi_core.labels import LabelError, LabelStore
from selavi_core.labels.schema import EVENTS
from selavi_core.runs.run import Run, write_run


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_label_run(tmp_path)  # 48 clips, 2 heads, K=4; head 0: clip i in cluster i % 4


def reassign(run_dir: Path, joint: np.ndarray, **meta_changes: object) -> Run:
    """Write new assignments into the same run folder, as `selavi train`/`selavi assign` do (write_run)."""
    old = Run(run_dir)
    meta = dataclasses.replace(old.meta, **meta_changes)
    conf = np.asarray(old.scores("confidence"))
    write_run(run_dir, meta, old.clip_ids, joint=joint, video=joint, audio=joint, confidence=conf,
              margin=conf / 2, features_video=np.asarray(old.features("video")),
              features_audio=np.asarray(old.features("audio")), priors=old.priors)  # fmt: skip
    return Run(run_dir)


def labels_of(store: LabelStore, head: int = 0) -> dict[str, tuple]:
    df = store.effective_labels(head)
    return {r.clip_id: (r.label, r.label_source) for r in df.itertuples()}


def test_retrain_with_permuted_clusters_names_follow_the_clips(run_dir: Path) -> None:
    store = LabelStore.open(run_dir)
    old = np.asarray(Run(run_dir).assignments())
    store.rename_cluster(0, 1, "dog", annotator="ana", expected_version=None)
    store.rename_cluster(0, 2, "cat", annotator="ana", expected_version=None)
    store.rename_cluster(1, 0, "loud", annotator="ana", expected_version=None)
    ids = [str(c) for c in Run(run_dir).clip_ids]
    store.override_clips([ids[5]], "puppy", annotator="ana", expected_version=None)
    before = labels_of(store)
    dogs = [c for c, a in zip(ids, old[:, 0], strict=True) if a == 1]

    perm = np.array([2, 3, 0, 1])  # the retrained model numbers the same clusters differently
    new = perm[old].astype(np.int32)
    run = reassign(run_dir, new, checkpoint_hash="retrained")
    store = LabelStore.open(run_dir)
    assert store.needs_carry()
    now = labels_of(store)
    assert all(now[c] == (None, "none") for c in dogs if c != ids[5]), "an old name attached to a new cluster index"
    assert now[ids[5]] == ("puppy", "override")  # per-clip labels carry by clip id
    with pytest.raises(LabelError, match="carry them over first"):
        store.rename_cluster(0, 3, "x", annotator="ana", expected_version=None)

    plan = store.carry_over()
    assert plan.status == "planned" and store.events()[-1].action == "override_clip"  # a plan writes nothing
    rows = {(r.head, r.name): r for r in plan.names.itertuples()}
    assert (rows[(0, "dog")].old_cluster, rows[(0, "dog")].new_cluster, rows[(0, "dog")].overlap) == ("1", "3", 1.0)
    assert (rows[(0, "cat")].old_cluster, rows[(0, "cat")].new_cluster) == ("2", "0")
    assert rows[(1, "loud")].new_cluster == "2" and rows[(1, "loud")].carried
    assert plan.needs_look.empty

    done = store.carry_over(apply=True, annotator="bob")
    assert done.status == "applied" and len(done.carried) == 3 and done.event_id == store.version()
    assert store.cluster_names(0) == {"3": "dog", "0": "cat"} and store.cluster_names(1) == {"2": "loud"}
    assert labels_of(store) == before, "every clip keeps the label it had before the retrain"
    assert not store.needs_carry()
    assert store.last_carry() is not None and store.last_carry().event_id == done.event_id
    store.rename_cluster(0, 1, "bird", annotator="ana", expected_version=None)  # edits work again
    assert store.events()[-1].target["assignment"] == run.assignment_id

    store.undo("ana")
    store.undo("bob")  # one undo reverts the whole carry: the names attach to nothing again
    assert store.needs_carry() and store.cluster_names(0) == {}


def test_scattered_or_colliding_names_are_listed_not_applied(run_dir: Path) -> None:
    store = LabelStore.open(run_dir)
    old = np.asarray(Run(run_dir).assignments())
    for k, name in enumerate(["bird", "dog", "cat", "fish"]):
        store.rename_cluster(0, k, name, annotator="ana", expected_version=None)
    new = old.copy()
    dog_rows = np.flatnonzero(old[:, 0] == 1)
    new[dog_rows, 0] = np.array([1, 2, 3])[np.arange(len(dog_rows)) % 3]  # dog's clips scatter over three clusters
    new[old[:, 0] == 3, 0] = 0  # fish's clips join bird's cluster: two names for one cluster
    reassign(run_dir, new)  # same checkpoint and catalog, another clustering: another assignment

    store = LabelStore.open(run_dir)
    report = store.carry_over(apply=True, annotator="ana")
    rows = {r.name: r for r in report.names.itertuples()}
    assert not rows["dog"].carried and "scattered" in rows["dog"].reason
    assert rows["dog"].overlap == pytest.approx(1 / 3)
    assert not rows["bird"].carried and not rows["fish"].carried
    assert "'fish'" in rows["bird"].reason and "'bird'" in rows["fish"].reason
    assert rows["cat"].carried and rows["cat"].new_cluster == "2"
    assert set(report.needs_look["name"]) == {"dog", "bird", "fish"}
    assert store.cluster_names(0) == {"2": "cat"}, "only the name whose clips stayed together is applied"
    assert set(store.last_carry().needs_look["name"]) == {"dog", "bird", "fish"}  # the log keeps the looks


def test_reassign_after_a_catalog_change_keeps_per_clip_labels(run_dir: Path) -> None:
    store = LabelStore.open(run_dir)
    ids = [str(c) for c in Run(run_dir).clip_ids]
    key = store.run_key
    store.override_clips(ids[:3], "speech", annotator="ana", expected_version=None)
    store.reject_clips(0, [ids[4]], annotator="ana", expected_version=None)
    store.rename_cluster(0, 0, "bird", annotator="ana", expected_version=None)
    before = labels_of(store)

    reassign(run_dir, np.asarray(Run(run_dir).assignments()), catalog_hash="newcatalog")
    store = LabelStore.open(run_dir)
    assert store.run_key == key, "the labels follow the run folder, not the catalog hash"
    now = labels_of(store)
    assert all(now[c] == ("speech", "override") for c in ids[:3])
    assert store.effective_labels(0).set_index("clip_id").loc[ids[4], "rejected"]
    report = store.carry_over(apply=True, annotator="ana")
    assert report.carried[["name", "old_cluster", "new_cluster", "overlap"]].values.tolist() == [
        ["bird", "0", "0", 1.0]
    ]
    assert labels_of(store) == before


def test_unknown_run_key_is_refused_with_the_keys_there(run_dir: Path) -> None:
    from selavi_core.commands import labels as cmd

    key = LabelStore.open(run_dir).run_key
    parser = argparse.ArgumentParser()
    cmd.register(parser.add_subparsers())
    args = parser.parse_args(["labels", str(run_dir), "show", "--run-key", key + "x"])
    with pytest.raises(LabelError, match=f"no labels under run key '{key}x'.*{key}"):
        args.func(args)
    with sa.create_engine(f"sqlite:///{run_dir / 'labels.sqlite'}").connect() as conn:
        keys = [r[0] for r in conn.execute(sa.text("SELECT run_key FROM label_runs"))]
    assert keys == [key], "a mistyped key must not start an empty label set"


def test_names_of_an_old_log_are_bound_once_and_carried(run_dir: Path) -> None:
    store = LabelStore.open(run_dir)
    old = np.asarray(Run(run_dir).assignments())
    with sa.create_engine(f"sqlite:///{run_dir / 'labels.sqlite'}").begin() as conn:  # a rename as logs had them
        conn.execute(EVENTS.insert().values(run_key=store.run_key, time=1.0, annotator="ana", action="rename_cluster",
                                            head=0, target={"head": 0, "cluster": "1"}, old_value={"name": None},
                                            new_value={"name": "dog"}, source="api"))  # fmt: skip
    store = LabelStore.open(run_dir)
    assert [e.action for e in store.events()] == ["rename_cluster", "bind"]
    assert store.events()[-1].new["assignment"] == Run(run_dir).assignment_id
    assert store.cluster_names(0) == {"1": "dog"}
    assert [e.action for e in LabelStore.open(run_dir).events()] == ["rename_cluster", "bind"]  # once

    reassign(run_dir, np.array([1, 0, 3, 2])[old].astype(np.int32), checkpoint_hash="retrained")
    store = LabelStore.open(run_dir)
    assert store.cluster_names(0) == {}
    store.carry_over(apply=True, annotator="ana")
    assert store.cluster_names(0) == {"0": "dog"}


def test_labels_carry_command(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from selavi_core.commands import labels as cmd

    parser = argparse.ArgumentParser()
    cmd.register(parser.add_subparsers())

    errs: list[str] = []

    def call(*argv: str) -> str:
        args = parser.parse_args(["labels", str(run_dir), *argv])
        assert args.func(args) == 0
        got = capsys.readouterr()
        errs.append(got.err)
        return got.out

    call("rename", "1", "dog", "--as", "ana")
    assert "nothing to carry" in call("carry")
    reassign(run_dir, ((np.asarray(Run(run_dir).assignments()) + 1) % 4).astype(np.int32), checkpoint_hash="v2")
    call("show")
    assert "label no cluster now" in errs[-1]
    out = call("carry")
    assert "would carry 1 cluster name" in out and "dog" in out and "100%" in out and "--apply" in out
    out = call("carry", "--apply", "--as", "ana")
    assert "carried 1 cluster name" in out
    assert "dog" in call("clusters")


def test_studio_notice_says_what_waits_and_what_was_carried(run_dir: Path) -> None:
    from selavi_core.studio.labelling import carry_notice

    store = LabelStore.open(run_dir)
    store.rename_cluster(0, 1, "dog", annotator="ana", expected_version=None)
    assert carry_notice(store) is None
    old = np.asarray(Run(run_dir).assignments())
    new = old.copy()
    new[:, 0] = np.array([3, 2, 1, 0])[old[:, 0]]
    reassign(run_dir, new)
    store = LabelStore.open(run_dir)
    notice = carry_notice(store)
    assert notice is not None and notice.kind == "pending" and "1 name would follow its clips" in notice.text
    assert notice.carried[["name", "was cluster", "now cluster", "overlap %"]].values.tolist() == [
        ["dog", "1", "2", 100.0]
    ]
    assert notice.needs_look.empty and store.events()[-1].action == "rename_cluster"  # looking writes nothing
    store.carry_over(apply=True, annotator="ana")
    done = carry_notice(store)
    assert done is not None and done.kind == "done" and "carried 1 cluster name" in done.text


def test_export_says_when_names_wait_for_a_carry_over(run_dir: Path, tmp_path: Path) -> None:
    from selavi_core.labels.exports import export_labels, summary

    store = LabelStore.open(run_dir)
    store.rename_cluster(0, 1, "dog", annotator="ana", expected_version=None)
    reassign(run_dir, ((np.asarray(Run(run_dir).assignments()) + 1) % 4).astype(np.int32), checkpoint_hash="v2")
    store = LabelStore.open(run_dir)
    result = export_labels(store, "csv", tmp_path / "out.csv", head=0)
    assert result.by_label == {} and result.provenance["labels"]["names_await_carry"]
    assert "carry" in summary(result)
    store.carry_over(apply=True, annotator="ana")
    result = export_labels(store, "csv", tmp_path / "out2.csv", head=0)
    assert result.by_label == {"dog": 12} and not result.provenance["labels"]["names_await_carry"]
    assert result.provenance["labels"]["assignment"] == Run(run_dir).assignment_id
