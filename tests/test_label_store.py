"""The label store: fold semantics (pure), the store API, stale-edit detection and concurrent writers."""

from __future__ import annotations

import argparse
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from label_fixtures import make_label_run
from pg_server import StoreBackend

from selavi_core.labels import LabelError, LabelStore, NothingToUndo, StaleEditError
from selavi_core.labels import semantics as sem
from selavi_core.labels.semantics import Event
from selavi_core.runs.run import Run

# ----------------------------------------------------------------------------------- pure fold

IDS = [f"c{i}" for i in range(12)]
ASSIGN = np.array([i % 4 for i in range(12)])  # cluster c holds c0+c, c4+c, c8+c


class Log:
    """Builds an event list by hand, the way the store would write it."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def add(self, who: str, action: str, head: int | None = 0, ref: int | None = None, **kw: object) -> int:
        target = kw.pop("target", {})
        new = kw.pop("new", None)
        e = Event(id=len(self.events) + 1, time=1000.0 + len(self.events), annotator=who, action=action, head=head,
                  target=target, new=new, ref=ref)  # fmt: skip
        self.events.append(e)
        return e.id

    def rename(self, who: str, cluster: str, name: str | None, head: int = 0) -> int:
        return self.add(who, "rename_cluster", head, target={"head": head, "cluster": cluster}, new={"name": name})

    def override(self, who: str, clips: list[str], label: str | None) -> int:
        return self.add(who, "override_clip", None, target={"clips": clips}, new={"label": label})

    def labels(self, head: int = 0, assign: np.ndarray = ASSIGN, upto: int | None = None) -> dict[str, tuple]:
        df = sem.effective_labels(sem.fold(self.events, upto=upto), head, IDS, assign)
        return {r.clip_id: (r.label, r.label_source) for r in df.itertuples()}


def test_rename_applies_to_members_only() -> None:
    log = Log()
    log.rename("ana", "1", "dog")
    got = log.labels()
    assert {c for c, (lab, _) in got.items() if lab == "dog"} == {"c1", "c5", "c9"}
    assert got["c1"] == ("dog", "cluster") and got["c0"] == (None, "none")
    log.rename("bob", "1", "canine")
    assert log.labels()["c5"] == ("canine", "cluster")
    assert log.labels(head=1)["c1"] == (None, "none")  # names belong to one head


def test_override_survives_rename_merge_and_reassignment() -> None:
    log = Log()
    log.rename("ana", "1", "dog")
    log.override("bob", ["c5"], "cat")
    log.rename("ana", "1", "canine")
    log.add("ana", "merge_clusters", target={"head": 0, "clusters": ["1", "2"]}, new={"name": "animal"})
    got = log.labels()
    assert got["c5"] == ("cat", "override")
    assert got["c1"] == ("animal", "cluster") and got["c2"] == ("animal", "cluster")
    moved = ASSIGN.copy()
    moved[5], moved[9] = 3, 3  # re-assignment: c5 (overridden) and c9 (cluster-labelled) move to cluster 3
    got = log.labels(assign=moved)
    assert got["c5"] == ("cat", "override")
    assert got["c9"] == (None, "none")  # it now takes cluster 3's (absent) name
    log.override("bob", ["c5"], None)  # clearing the override: back to the cluster's name
    assert log.labels()["c5"] == ("animal", "cluster")


def test_reject_wins_over_cluster_name_but_not_over_override() -> None:
    log = Log()
    log.rename("ana", "2", "siren")
    log.add("bob", "reject_clip", target={"head": 0, "clips": ["c6"]}, new={"rejected": True})
    log.rename("ana", "2", "police siren")
    df = sem.effective_labels(sem.fold(log.events), 0, IDS, ASSIGN)
    row = df.set_index("clip_id").loc["c6"]
    assert row.label is None and row.label_source == "none" and bool(row.rejected) and row.annotator == "bob"
    assert log.labels()["c2"] == ("police siren", "cluster")
    assert log.labels(head=1, assign=np.full(12, 2))["c6"] == (None, "none")  # head 1 has no name for 2
    log.rename("ana", "2", "s", head=1)
    assert log.labels(head=1, assign=np.full(12, 2))["c6"] == ("s", "cluster")  # rejection was in head 0 only
    log.override("ana", ["c6"], "ambulance")
    assert log.labels()["c6"] == ("ambulance", "override")
    log.override("ana", ["c6"], None)
    log.add("bob", "reject_clip", target={"head": 0, "clips": ["c6"]}, new={"rejected": False})
    assert log.labels()["c6"] == ("police siren", "cluster")


def test_merge_gives_one_name_and_renames_the_group() -> None:
    log = Log()
    log.rename("ana", "0", "engine")
    log.rename("ana", "3", "motor")
    log.add("bob", "merge_clusters", target={"head": 0, "clusters": ["3", "0"]}, new={"name": None})
    got = log.labels()
    assert got["c0"] == ("motor", "cluster") and got["c3"] == ("motor", "cluster")  # first named in the given order
    log.rename("ana", "0", "car engine")  # renaming any member renames the group
    got = log.labels()
    assert got["c3"] == ("car engine", "cluster") and got["c4"] == ("car engine", "cluster")
    state = sem.fold(log.events)
    assert state.cluster_version(0, "3") == state.cluster_version(0, "0") == 4


def test_split_then_name_subclusters() -> None:
    log = Log()
    log.rename("ana", "1", "dog")
    log.add("ana", "split_cluster", target={"head": 0, "cluster": "1"},
            new={"method": "selection", "parts": {"1.a": ["c1", "c5"], "1.b": ["c9"]}})  # fmt: skip
    got = log.labels()
    assert got["c1"] == got["c9"] == ("dog", "cluster")  # sub-clusters inherit until named
    nodes = sem.clip_nodes(sem.fold(log.events), 0, IDS, ASSIGN)
    assert list(nodes[[1, 5, 9, 0]]) == ["1.a", "1.a", "1.b", "0"]
    log.rename("bob", "1.a", "puppy")
    log.rename("ana", "1", "hound")
    got = log.labels()
    assert got["c1"] == got["c5"] == ("puppy", "cluster")
    assert got["c9"] == ("hound", "cluster")  # 1.b still inherits
    moved = ASSIGN.copy()
    moved[5] = 2  # c5 re-assigned away from cluster 1: the old split no longer moves it
    assert log.labels(assign=moved)["c5"] == (None, "none")
    table = sem.cluster_table(sem.fold(log.events), 0, nodes, 4)
    row = table.set_index("cluster")
    assert row.loc["1.a", "name"] == "puppy" and row.loc["1.a", "name_source"] == "own"
    assert row.loc["1.b", "name"] == "hound" and row.loc["1.b", "name_source"] == "inherited"
    assert row.loc["1", "size"] == 0 and row.loc["1.a", "size"] == 2


def test_undo_redo_are_per_annotator() -> None:
    log = Log()
    a1 = log.rename("ana", "0", "x")
    log.rename("bob", "1", "y")
    log.rename("ana", "2", "z")
    st = sem.fold(log.events)
    assert st.undo_stacks["ana"] == [a1, 3] and st.undo_stacks["bob"] == [2]
    log.add("ana", "undo", ref=3, target={"event": 3})
    got = log.labels()
    assert got["c2"] == (None, "none") and got["c1"] == ("y", "cluster") and got["c0"] == ("x", "cluster")
    log.add("ana", "undo", ref=a1, target={"event": a1})
    assert log.labels()["c0"] == (None, "none")
    st = sem.fold(log.events)
    assert st.redo_stacks["ana"] == [3, a1] and st.undo_stacks["bob"] == [2]
    log.add("ana", "redo", ref=a1, target={"event": a1})
    assert log.labels()["c0"] == ("x", "cluster")
    log.rename("ana", "3", "w")  # a new edit clears ana's redo stack
    assert sem.fold(log.events).redo_stacks["ana"] == []


def test_undo_never_erases_someone_elses_later_edit() -> None:
    log = Log()
    mine = log.rename("ana", "0", "dog")
    log.rename("bob", "0", "canine")
    log.add("ana", "undo", ref=mine, target={"event": mine})
    assert log.labels()["c0"] == ("canine", "cluster")


def test_snapshot_folds_only_events_up_to_it() -> None:
    log = Log()
    log.rename("ana", "0", "v1 name")
    snap = log.add("ana", "snapshot", None, new={"name": "label set v1"})
    log.rename("ana", "0", "v2 name")
    st = sem.fold(log.events)
    assert st.snapshots == {"label set v1": snap}
    assert log.labels(upto=snap)["c0"] == ("v1 name", "cluster")
    assert log.labels()["c0"] == ("v2 name", "cluster")


def test_vocabulary_counts_by_source() -> None:
    log = Log()
    log.rename("ana", "0", "a")
    log.override("ana", ["c1"], "a")
    log.override("ana", ["c4"], "b")
    voc = sem.vocabulary(sem.effective_labels(sem.fold(log.events), 0, IDS, ASSIGN)).set_index("label")
    assert voc.loc["a"].tolist() == [3, 1, 2]  # count, override, cluster (c0, c8 by cluster; c1 override)
    assert voc.loc["b"].tolist() == [1, 1, 0]


def test_sub_suffixes_and_node_ids() -> None:
    assert [sem.sub_suffix(i) for i in (0, 1, 25, 26, 27, 701, 702)] == ["a", "b", "z", "aa", "ab", "zz", "aaa"]
    assert sem.node_id(np.int32(12)) == "12" and sem.node_id(" 12.a ") == "12.a"
    for bad in (-1, "12.", "a", "12.A", True):
        with pytest.raises(ValueError):
            sem.node_id(bad)


def test_a_cluster_edit_without_a_head_is_refused_not_filed_under_none() -> None:
    """Cluster edits belong to one head (the store always records it); a log row without one is an error."""
    log = Log()
    log.add("ana", "rename_cluster", None, target={"cluster": "1"}, new={"name": "dog"})
    with pytest.raises(ValueError, match="names no head"):
        sem.fold(log.events)
    log = Log()
    log.override("ana", ["c1"], "dog")  # clip labels hold in every head: no head needed
    assert log.labels()["c1"] == ("dog", "override")


# ----------------------------------------------------------------------------------- the store


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    return make_label_run(tmp_path)


def test_store_end_to_end(run_dir: Path, store_backend: StoreBackend) -> None:
    store = store_backend.open(run_dir)
    if store_backend.url is None:
        assert Path(store.url.removeprefix("sqlite:///")) == (run_dir / "labels.sqlite").resolve()
    else:
        assert store.url == store_backend.url and not (run_dir / "labels.sqlite").exists()
    run = Run(run_dir)
    ids = [str(c) for c in run.clip_ids]
    seen = store.version()
    assert seen == 0
    e1 = store.rename_cluster(0, 1, "dog", annotator="ana", expected_version=seen)
    store.override_clips([ids[5]], "cat", annotator="bob", expected_version=seen)
    store.reject_clips(0, [ids[9]], annotator="bob", expected_version=seen)
    df = store.effective_labels(0).set_index("clip_id")
    members = [c for c, a in zip(ids, run.assignments("joint")[:, 0], strict=True) if a == 1]
    assert len(members) == 12
    for c in members:
        exp = {ids[5]: ("cat", "override", "bob"), ids[9]: (None, "none", "bob")}.get(c, ("dog", "cluster", "ana"))
        assert (df.loc[c, "label"], df.loc[c, "label_source"], df.loc[c, "annotator"]) == exp
    assert df.loc[ids[1], "event_id"] == e1.id
    np.testing.assert_allclose(df["confidence"].to_numpy(), run.scores("confidence")[:, 0])
    # a fresh store object (another process, after a restart) sees the same labels
    again = store_backend.open(run_dir)
    assert again.effective_labels(0).equals(store.effective_labels(0))
    assert again.history(10)["summary"].iloc[-1] == "ana renamed cluster 1 (head 0) to 'dog'"
    assert again.vocabulary(0).set_index("label").loc["dog", "count"] == 10
    assert store.cluster_names(0) == {"1": "dog"}


def test_stale_rename_is_reported_not_overwritten(run_dir: Path, store_backend: StoreBackend) -> None:
    ana, bob = store_backend.open(run_dir), store_backend.open(run_dir)  # two sessions, two engines
    seen_by_bob = bob.version()
    ana.rename_cluster(0, 2, "siren", annotator="ana", expected_version=ana.version())
    with pytest.raises(StaleEditError) as err:
        bob.rename_cluster(0, 2, "alarm", annotator="bob", expected_version=seen_by_bob)
    msg = str(err.value)
    assert "ana" in msg and "'siren'" in msg and "cluster 2" in msg
    assert err.value.event.annotator == "ana" and err.value.current == "siren"
    assert bob.cluster_names(0)[str(2)] == "siren"
    # edits to other clusters and other clips never conflict, even from the same stale view
    bob.rename_cluster(0, 3, "engine", annotator="bob", expected_version=seen_by_bob)
    bob.override_clips([str(Run(run_dir).clip_ids[0])], "x", annotator="bob", expected_version=seen_by_bob)
    # a merge that involves the renamed cluster is stale too
    with pytest.raises(StaleEditError):
        bob.merge_clusters(0, [3, 2], annotator="bob", expected_version=seen_by_bob)
    # after reloading, bob's rename goes through and is recorded as based on what he saw
    reloaded = bob.version_of(0, 2)
    assert reloaded == 1  # ana's rename; bob's own edits to cluster 3 and a clip do not count
    ev = bob.rename_cluster(0, 2, "alarm", annotator="bob", expected_version=reloaded)
    assert ev.target["based_on"] == 1
    assert ana.cluster_names(0)["2"] == "alarm"


def test_stale_clip_override(run_dir: Path, store_backend: StoreBackend) -> None:
    store = store_backend.open(run_dir)
    cid = str(Run(run_dir).clip_ids[7])
    v = store.version()
    store.override_clips([cid], "cat", annotator="ana", expected_version=v)
    with pytest.raises(StaleEditError, match="'cat'"):
        store.override_clips([cid], "dog", annotator="bob", expected_version=v)
    with pytest.raises(StaleEditError):
        store.reject_clips(0, [cid], annotator="bob", expected_version=v)
    assert store.version_of(clip_ids=[cid]) == 1


def test_split_by_kmeans_and_selection(run_dir: Path, store_backend: StoreBackend) -> None:
    store = store_backend.open(run_dir)
    ids = [str(c) for c in Run(run_dir).clip_ids]
    store.rename_cluster(0, 1, "dog", annotator="ana", expected_version=0)
    proposal = store.propose_split(0, 1, method="kmeans", k=2)
    assert list(proposal) == ["1.a", "1.b"] and store.version() == 1  # proposing writes nothing
    # the fixture puts members with even and odd (i // K) in two blobs: k-means must find exactly them
    halves = {frozenset((ids.index(c) // 4) % 2 for c in part) for part in proposal.values()}
    assert halves == {frozenset({0}), frozenset({1})}
    ev = store.split_cluster(0, 1, annotator="ana", expected_version=1, proposal=proposal)
    assert ev.new["parts"] == proposal
    assert set(store.effective_labels(0).query("cluster in ['1.a', '1.b']")["label"]) == {"dog"}
    store.rename_cluster(0, "1.a", "puppy", annotator="bob", expected_version=store.version())
    labels = store.effective_labels(0).set_index("clip_id")
    assert set(labels.loc[proposal["1.a"], "label"]) == {"puppy"}
    assert set(labels.loc[proposal["1.b"], "label"]) == {"dog"}
    # a map selection splits 1.b further; ids are never reused after an undo
    sel = proposal["1.b"][:2] + [ids[0]]  # a lasso also catches a clip of another cluster: ignored
    ev2 = store.split_cluster(
        0, "1.b", annotator="ana", expected_version=store.version(), method="selection", clip_ids=sel
    )
    assert ev2.new["parts"] == {"1.b.a": proposal["1.b"][:2], "1.b.b": proposal["1.b"][2:]}
    store.undo("ana")
    assert "1.b.a" not in set(store.effective_labels(0)["cluster"])
    ev3 = store.split_cluster(
        0, "1.b", annotator="ana", expected_version=store.version(), method="selection", clip_ids=sel
    )
    assert set(ev3.new["parts"]) == {"1.b.c", "1.b.d"}
    with pytest.raises(LabelError, match="select some members"):
        store.split_cluster(0, 2, annotator="ana", expected_version=None, method="selection", clip_ids=[ids[0]])
    assert store.members(0, "1.b.c") == proposal["1.b"][:2]


def test_kmeans_split_weighs_audio_and_video_equally(run_dir: Path, store_backend: StoreBackend) -> None:
    """The split embeds members like the evaluation and the Studio (each modality L2-normalised): a
    large-scale video feature that is noise does not drown a small-scale audio feature that separates."""
    run = Run(run_dir)
    n = run.n_clips
    rng = np.random.default_rng(5)
    group = (np.arange(n) // 4) % 2  # within cluster 1 of head 0 (clips 1, 5, 9, ...): alternating halves
    video = rng.normal(size=(n, 8)) * 100.0
    audio = np.where(group[:, None] == 1, 1.0, -1.0) * 0.01 + rng.normal(size=(n, 4)) * 0.001
    np.save(run_dir / "features" / "video.npy", video.astype(np.float16))
    np.save(run_dir / "features" / "audio.npy", audio.astype(np.float16))
    ids = [str(c) for c in run.clip_ids]
    store = store_backend.open(run_dir)
    for seed in range(3):
        proposal = store.propose_split(0, 1, method="kmeans", k=2, seed=seed)
        groups = {frozenset(int(group[ids.index(c)]) for c in part) for part in proposal.values()}
        assert groups == {frozenset({0}), frozenset({1})}


def test_reset_clips_is_one_edit_that_one_undo_reverts(run_dir: Path, store_backend: StoreBackend) -> None:
    store = store_backend.open(run_dir)
    ids = [str(c) for c in Run(run_dir).clip_ids]
    a, b, c = ids[1], ids[5], ids[9]  # members of cluster 1 in head 0
    store.rename_cluster(0, 1, "dog", annotator="bob", expected_version=0)
    store.label_clips([a], "cat", annotator="ana", expected_version=store.version())
    store.reject_clips(0, [b], annotator="ana", expected_version=store.version())
    store.override_clips([c], "owl", annotator="ana", expected_version=store.version())
    store.reject_clips(1, [b], annotator="ana", expected_version=store.version())  # another head: untouched

    def view() -> tuple[list, list, list]:
        h0 = store.effective_labels(0).set_index("clip_id").loc[[a, b, c]]
        h1 = store.effective_labels(1).set_index("clip_id").loc[[b]]
        return h0["label"].tolist(), h0["rejected"].tolist(), h1["rejected"].tolist()

    before, n = view(), len(store.events())
    assert before == (["cat", None, "owl"], [False, True, False], [True])
    ev = store.reset_clips(0, [a, b, c], annotator="ana", expected_version=store.version())
    assert len(store.events()) == n + 1 and ev.action == "reset_clips" and ev.head == 0
    assert ev.old == {"overrides": {a: "cat", c: "owl"}, "rejected": [b]}
    assert view() == (["dog", "dog", "dog"], [False, False, False], [True])  # "not this" lifted in head 0 only
    assert "gave 3 clips back to their cluster" in store.history(1)["summary"].iloc[0]
    undone = store.undo("ana")
    assert undone.ref == ev.id and view() == before  # one undo restores the own labels and the rejection
    store.redo("ana")
    assert view() == (["dog", "dog", "dog"], [False, False, False], [True])
    with pytest.raises(LabelError, match="nothing to reset"):
        store.reset_clips(0, [a, b], annotator="ana", expected_version=store.version())
    # stale: someone labelled one of the clips after the version the page was drawn from
    seen = store.version()
    store.override_clips([a], "fox", annotator="bob", expected_version=seen)
    with pytest.raises(StaleEditError, match="fox"):
        store.reset_clips(0, [a, b], annotator="ana", expected_version=seen)


def test_annotator_names_follow_one_rule(run_dir: Path, store_backend: StoreBackend) -> None:
    from selavi_core.config import LABELS
    from selavi_core.studio.labelling import clean_annotator

    store = store_backend.open(run_dir)
    ev = store.rename_cluster(0, 1, "dog", annotator="  Ana \t María ", expected_version=0)
    assert ev.annotator == "Ana María" == sem.annotator_name("  Ana \t María ") == clean_annotator("Ana   María")
    assert store.can_undo("Ana  María") == ev  # the same person, however the name was typed
    with pytest.raises(LabelError, match="annotator name is required"):
        store.rename_cluster(0, 1, "cat", annotator=" \n ", expected_version=None)
    with pytest.raises(LabelError, match="longer than"):
        store.rename_cluster(0, 1, "cat", annotator="x" * (LABELS.max_name_length + 1), expected_version=None)
    assert sem.annotator_problem("Ana") is None and sem.annotator_name(None) is None


def test_undo_redo_through_the_store(run_dir: Path, store_backend: StoreBackend) -> None:
    store = store_backend.open(run_dir)
    with pytest.raises(NothingToUndo):
        store.undo("ana")
    store.rename_cluster(0, 0, "a0", annotator="ana", expected_version=None)
    store.rename_cluster(0, 1, "b1", annotator="bob", expected_version=None)
    assert store.can_undo("ana").target["cluster"] == "0"
    u = store.undo("ana")
    assert u.ref == 1 and store.cluster_names(0) == {"1": "b1"}
    assert store.can_redo("ana").id == 1 and store.can_redo("bob") is None
    store.redo("ana")
    assert store.cluster_names(0) == {"0": "a0", "1": "b1"}
    hist = store.history()
    assert list(hist["action"]) == ["redo", "undo", "rename_cluster", "rename_cluster"]
    assert not hist["undone"].any()


def test_snapshots_in_the_store(run_dir: Path, store_backend: StoreBackend) -> None:
    store = store_backend.open(run_dir)
    store.rename_cluster(0, 0, "first", annotator="ana", expected_version=None)
    snap = store.snapshot("label set v1", annotator="ana")
    store.rename_cluster(0, 0, "second", annotator="ana", expected_version=None)
    with pytest.raises(LabelError, match="exists already"):
        store.snapshot("label set v1", annotator="bob")
    assert set(store.effective_labels(0, snapshot="label set v1").query("cluster == '0'")["label"]) == {"first"}
    assert set(store.effective_labels(0).query("cluster == '0'")["label"]) == {"second"}
    assert store.snapshots()["event_id"].tolist() == [snap.id]
    with pytest.raises(LabelError, match="no snapshot"):
        store.effective_labels(0, snapshot="v9")


def test_bad_edits_are_refused_with_reasons(run_dir: Path, store_backend: StoreBackend) -> None:
    store = store_backend.open(run_dir)
    cases = [
        (lambda: store.rename_cluster(0, 4, "x", annotator="a", expected_version=None), "clusters 0..3"),
        (lambda: store.rename_cluster(2, 0, "x", annotator="a", expected_version=None), "has 2 heads"),
        (lambda: store.rename_cluster(0, "1.a", "x", annotator="a", expected_version=None), "split it first"),
        (lambda: store.rename_cluster(0, 0, "x", annotator="  ", expected_version=None), "annotator name"),
        (lambda: store.override_clips(["nope"], "x", annotator="a", expected_version=None), "not in this run"),
        (lambda: store.merge_clusters(0, [1, 1], annotator="a", expected_version=None), "two different"),
        (lambda: store.split_cluster(0, 1, annotator="a", expected_version=None, k=99), "k must be"),
    ]
    for call, reason in cases:
        with pytest.raises(LabelError, match=reason):
            call()
    assert store.version() == 0  # nothing was written


def test_two_threads_with_separate_engines_lose_nothing(run_dir: Path, store_backend: StoreBackend) -> None:
    ids = [str(c) for c in Run(run_dir).clip_ids]
    acked: dict[str, list[int]] = {"ana": [], "bob": []}
    errors: list[BaseException] = []

    def work(who: str, clusters: list[int], clips: list[str]) -> None:
        try:
            store = store_backend.open(run_dir)  # its own engine and connection pool
            for i in range(15):
                ev = store.rename_cluster(
                    1, clusters[i % 2], f"{who}{i}", annotator=who, expected_version=store.version()
                )
                acked[who].append(ev.id)
                ev = store.override_clips(
                    [clips[i % len(clips)]], f"{who}-clip{i}", annotator=who, expected_version=store.version()
                )
                acked[who].append(ev.id)
        except BaseException as err:  # surfaced below
            errors.append(err)

    threads = [
        threading.Thread(target=work, args=("ana", [0, 1], ids[:5])),
        threading.Thread(target=work, args=("bob", [2, 3], ids[5:10])),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    store = store_backend.open(run_dir)
    events = {e.id: e for e in store.events()}
    assert len(events) == 60 and sorted(acked["ana"] + acked["bob"]) == sorted(events)
    assert store.cluster_names(1) == {"0": "ana14", "1": "ana13", "2": "bob14", "3": "bob13"}


def test_racing_renames_of_one_cluster_never_lose_an_update(run_dir: Path, store_backend: StoreBackend) -> None:
    """Both sessions read the cluster's version and rename it; each rename either lands on the latest
    version or raises StaleEditError, which the log proves (``based_on`` of every rename is the id of
    the rename before it)."""
    outcomes = {"ok": 0, "stale": 0}
    lock = threading.Lock()

    def work(who: str) -> None:
        store = store_backend.open(run_dir)
        for i in range(12):
            seen = store.version_of(0, 2)
            try:
                store.rename_cluster(0, 2, f"{who}{i}", annotator=who, expected_version=seen)
                key = "ok"
            except StaleEditError:
                key = "stale"
            with lock:
                outcomes[key] += 1

    threads = [threading.Thread(target=work, args=(w,)) for w in ("ana", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    renames = [e for e in store_backend.open(run_dir).events() if e.action == "rename_cluster"]
    assert len(renames) == outcomes["ok"] and outcomes["ok"] + outcomes["stale"] == 24
    previous = 0
    for e in renames:
        assert e.target["based_on"] == previous, "a rename was applied over a version its author never saw"
        previous = e.id


def test_store_url_outside_the_run_and_shared_by_runs(tmp_path: Path, store_backend: StoreBackend) -> None:
    run_a = make_label_run(tmp_path / "a")
    run_b = make_label_run(tmp_path / "b", k=3)
    url = store_backend.url or f"sqlite:///{tmp_path / 'team' / 'labels.db'}"
    sa = LabelStore.open(run_a, store=url)
    sb = LabelStore.open(run_b, store=url, run_key="run-b", create_run_key=True)
    sa.rename_cluster(0, 0, "from a", annotator="ana", expected_version=0)
    sb.rename_cluster(0, 0, "from b", annotator="bob", expected_version=0)  # versions are per run
    assert sa.cluster_names(0) == {"0": "from a"} and sb.cluster_names(0) == {"0": "from b"}
    assert not (run_a / "labels.sqlite").exists()
    with pytest.raises(LabelError, match="holds labels of 2 runs"):
        LabelStore.open(url)
    only = LabelStore.open(url, run_key="run-b")  # label-only access by URL: the run is found from the log
    assert only.run is not None and only.cluster_names(0) == {"0": "from b"}


def test_sqlite_file_is_wal_and_consistent(run_dir: Path) -> None:
    store = LabelStore.open(run_dir)
    store.rename_cluster(0, 0, "x", annotator="ana", expected_version=0)
    con = sqlite3.connect(run_dir / "labels.sqlite")
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("SELECT action, annotator FROM label_events").fetchall() == [("rename_cluster", "ana")]
    finally:
        con.close()


def test_schema_is_portable_sql() -> None:
    """The tables compile for PostgreSQL too (a team can point --store at a server)."""
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.schema import CreateTable

    from selavi_core.labels.schema import EVENTS, RUNS

    for table in (RUNS, EVENTS):
        ddl = str(CreateTable(table).compile(dialect=postgresql.dialect()))
        assert "CREATE TABLE" in ddl and "AUTOINCREMENT" not in ddl
    assert "SERIAL" in str(CreateTable(EVENTS).compile(dialect=postgresql.dialect()))


def test_labels_command(run_dir: Path, store_backend: StoreBackend, capsys: pytest.CaptureFixture[str]) -> None:
    from selavi_core.commands import labels as cmd

    parser = argparse.ArgumentParser()
    cmd.register(parser.add_subparsers())

    def call(*argv: str) -> str:
        args = parser.parse_args(["labels", str(run_dir), *argv, *store_backend.store_args()])
        assert args.func(args) == 0
        return capsys.readouterr().out

    assert "event 1" in call("rename", "2", "siren", "--as", "ana")
    assert "snapshot 'v1' saved" in call("snapshot", "v1", "--as", "ana")
    assert "siren" in call("show")
    out = call("history")
    assert "ana renamed cluster 2 (head 0) to 'siren'" in out and "saved snapshot 'v1'" in out
    assert "undo done" in call("undo", "--as", "ana")
    assert "no labels yet" in call("show")
    assert "'v1': event 2" in call("snapshots")
    assert (run_dir / "labels.sqlite").exists() == (store_backend.url is None)


def test_incremental_state_equals_a_fresh_fold(run_dir: Path, store_backend: StoreBackend) -> None:
    """The store extends its cached fold in place after each append; a random mix of every edit kind
    (with undo and redo) must give exactly what folding the whole log from scratch gives."""
    rng = np.random.default_rng(5)
    store = store_backend.open(run_dir)
    run = Run(run_dir)
    ids = [str(c) for c in run.clip_ids]
    who = ["ana", "bob"]
    for step in range(60):
        a = who[step % 2]
        kind = rng.choice(["rename", "override", "reject", "merge", "split", "undo", "redo", "snapshot"])
        head = int(rng.integers(2))
        nodes = store.clusters(head)["cluster"].tolist()
        try:
            if kind == "rename":
                store.rename_cluster(head, rng.choice(nodes), f"n{step}", annotator=a, expected_version=None)
            elif kind == "override":
                store.override_clips(list(rng.choice(ids, 3)), f"o{step}", annotator=a, expected_version=None)
            elif kind == "reject":
                store.reject_clips(head, list(rng.choice(ids, 2)), annotator=a, expected_version=None)
            elif kind == "merge":
                store.merge_clusters(
                    head, list(rng.choice(nodes, 2, replace=False)), annotator=a, expected_version=None
                )
            elif kind == "split":
                store.split_cluster(head, rng.choice(nodes), annotator=a, expected_version=None, k=2)
            elif kind in ("undo", "redo"):  # by whoever can (a random annotator rarely could redo)
                able = [w for w in who if (store.can_undo(w) if kind == "undo" else store.can_redo(w))]
                getattr(store, kind)(able[0] if able else a)
            else:
                store.snapshot(f"s{step}", annotator=a)
        except LabelError:
            pass  # an impossible random edit (tiny cluster, empty undo stack): refused, nothing written
        for h in (0, 1):
            fresh = sem.effective_labels(sem.fold(store.events()), h, ids, run.assignments("joint")[:, h],
                                         run.scores("confidence")[:, h])  # fmt: skip
            pd.testing.assert_frame_equal(store.effective_labels(h), fresh)
    actions = {e.action for e in store.events()}
    assert {"rename_cluster", "merge_clusters", "split_cluster", "undo", "redo"} <= actions
    reopened = store_backend.open(run_dir)
    for h in (0, 1):
        pd.testing.assert_frame_equal(reopened.effective_labels(h), store.effective_labels(h))


def test_sessions_opening_a_fresh_store_at_once_never_see_locked(tmp_path):
    """Switching a new SQLite file to WAL takes a lock SQLite's busy handler does not wait for: two sessions
    opening a fresh store at once got "database is locked" about once in 200 tries before make_engine retried."""
    import threading

    from selavi_core.labels.schema import make_engine

    errors: list[BaseException] = []

    def open_store(url: str) -> None:
        try:
            with make_engine(url).connect():
                pass
        except BaseException as err:  # surfaced below
            errors.append(err)

    for i in range(300):
        url = f"sqlite:///{tmp_path}/store{i}.sqlite"
        threads = [threading.Thread(target=open_store, args=(url,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def test_sessions_creating_a_fresh_store_at_once_all_open_it(run_dir: Path, store_backend: StoreBackend) -> None:
    """Several sessions open a store nobody created yet, at the same moment: creating the tables and the run's
    row races (on PostgreSQL two CREATE TABLEs or two INSERTs of the run collide unless writers take the lock
    first). All open it, there is one run, and every session's edit lands."""
    n = 6
    go = threading.Barrier(n)
    errors: list[BaseException] = []
    stores: list[LabelStore] = []

    def open_and_edit(i: int) -> None:
        try:
            go.wait()
            store = store_backend.open(run_dir)
            stores.append(store)
            store.rename_cluster(1, i % 4, f"s{i}", annotator=f"a{i}", expected_version=None)
        except BaseException as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=open_and_edit, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store_backend.open(run_dir).events()) == n and len({s.run_key for s in stores}) == 1
