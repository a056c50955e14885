"""Labelling in the Studio under AppTest: annotator, rename (and a stale rename), clip corrections, merge,
split, the Labels page (vocabulary, undo, snapshots, export), and the Map's human-label colours.

Each test works on its own copy of the small real run (the Studio writes RUN_DIR/labels.sqlite).
Expected labels are computed here from the run's assignment file and the edits the test made,
never read back from the Studio's own helpers; the store is checked as the durable truth.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pg_server import StoreBackend
from streamlit.testing.v1 import AppTest

from selavi_app import HOME
from selavi_core.auth import add_user, remove_user
from selavi_core.labels import LabelStore
from selavi_core.studio.auth import AUTH_FILE_ENV, AUTH_HEADER_ENV
from selavi_core.studio.runs import RUNS_ENV, STORE_ENV

ENTRY = HOME  # the installed package's entry script, as `selavi app` runs it
TIMEOUT = 120
PAGES = ("overview", "clusters", "compare", "map", "similar", "labels")


@pytest.fixture(scope="module")
def mapped_run(studio_run) -> Path:
    """The shared small run with its map computed once (the Map page reads it instead of running UMAP)."""
    from selavi_core.studio import open_run
    from selavi_core.studio.mapping import ensure_map

    ensure_map(open_run(studio_run[1]))
    return studio_run[1]


@pytest.fixture()
def run_dir(mapped_run, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(mapped_run, dst, ignore=shutil.ignore_patterns("labels.sqlite*"))
    return dst


@pytest.fixture()
def app(run_dir, monkeypatch):
    monkeypatch.setenv(RUNS_ENV, str(run_dir))
    monkeypatch.setenv("SELAVI_NO_PROGRESS", "1")

    def make(page: str | None = None, *, annotator: str | None = None, **params: str) -> AppTest:
        """The Studio on ``page`` with ``params`` in the URL; ``annotator``: the name typed in the sidebar
        earlier in this browser session (single-user mode; a URL never says who edits)."""
        at = AppTest.from_file(str(ENTRY), default_timeout=TIMEOUT)
        at.query_params.update({"run": "run", **params})
        if annotator is not None:
            at.session_state["_annotator"] = annotator
        at.run()
        if page:
            at.switch_page(f"views/{page}.py").run()
        ok(at)
        return at

    return make


@pytest.fixture()
def joint(run_dir) -> np.ndarray:
    return np.load(run_dir / "assignments" / "joint.npy")


@pytest.fixture()
def clip_ids(run_dir) -> list[str]:
    return pd.read_parquet(run_dir / "clips.parquet")["clip_id"].astype(str).tolist()


def ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def button(at: AppTest, label: str):
    hits = [b for b in at.button if b.label == label]
    assert hits, f"no button {label!r} in {[b.label for b in at.button]}"
    return hits[0]


def text_input(at: AppTest, label: str):
    hits = [t for t in at.text_input if t.label == label]
    assert hits, f"no text input {label!r} in {[t.label for t in at.text_input]}"
    return hits[0]


def click(at: AppTest, label: str) -> AppTest:
    button(at, label).click().run()
    ok(at)
    return at


def expected_labels(clip_ids, assignment, names, overrides=(), rejected=()) -> pd.DataFrame:
    """Effective labels by the rules of the issue, written out independently: override, else (unless
    rejected) the cluster's name, else none."""
    rows = []
    over = dict(overrides)
    for cid, k in zip(clip_ids, assignment, strict=True):
        if cid in over:
            rows.append((cid, over[cid], "override"))
        elif cid not in rejected and names.get(int(k)):
            rows.append((cid, names[int(k)], "cluster"))
        else:
            rows.append((cid, None, "none"))
    return pd.DataFrame(rows, columns=["clip_id", "label", "label_source"], dtype=object)


def vocab_of(expected: pd.DataFrame) -> dict[str, tuple[int, int, int]]:
    out = {}
    for label, g in expected.dropna(subset=["label"]).groupby("label"):
        out[label] = (len(g), int((g["label_source"] == "override").sum()), int((g["label_source"] == "cluster").sum()))
    return out


# ------------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_with_labels(app, run_dir, page):
    """Every page renders, before any label and after names, a merge, a split and clip corrections."""
    at = app(page, head="0", cluster="1", annotator="ana")
    assert at.title, page
    store = LabelStore.open(run_dir)
    store.rename_cluster(0, 1, "dog", annotator="bob", expected_version=store.version())
    store.merge_clusters(0, [2, 3], name="bird", annotator="bob", expected_version=store.version())
    store.split_cluster(0, 1, k=2, annotator="bob", expected_version=store.version())
    first, second = store.members(0, 0)[:2]
    store.override_clips([first], "cat", annotator="bob", expected_version=store.version())
    store.reject_clips(0, [second], annotator="bob", expected_version=store.version())
    at.run()
    ok(at)
    assert not at.error, [e.value for e in at.error]


def test_annotator_is_required_before_editing(app, run_dir):
    at = app("clusters", head="0", cluster="1")
    for label in ("Rename", "Give them this label", "Not this", "Merge", "Propose a split"):
        assert button(at, label).disabled, label
    assert any("Enter your name under **Annotator**" in c.value for c in at.caption)
    at.sidebar.text_input[0].input("  ana  ").run()
    ok(at)
    assert not button(at, "Rename").disabled and not button(at, "Give them this label").disabled
    assert "annotator" not in at.query_params  # remembered in the session, never in the URL
    assert any("Single-user mode" in c.value for c in at.sidebar.caption)
    at.switch_page("views/labels.py").run()
    ok(at)
    assert at.sidebar.text_input[0].value.strip() == "ana" and not button(at, "Save snapshot").disabled
    assert "annotator" not in at.query_params
    # a deep link with ?annotator= does not say who edits: the field stays empty, editing stays off
    at2 = AppTest.from_file(str(ENTRY), default_timeout=TIMEOUT)
    at2.query_params.update({"run": "run", "head": "0", "cluster": "1", "annotator": "bob"})
    at2.run()
    at2.switch_page("views/clusters.py").run()
    ok(at2)
    assert at2.sidebar.text_input[0].value == "" and button(at2, "Rename").disabled
    assert LabelStore.open(run_dir).version() == 0  # nothing was written by looking


def test_sign_in_comes_before_any_page_and_the_user_is_who_edits(app, run_dir, tmp_path, monkeypatch):
    """``selavi app --auth``: the sign-in form and nothing else until a user signs in; then every edit is
    that user's, whatever the URL says; a removed user is signed out; sign-out shows the form again."""
    users = tmp_path / "users.toml"
    add_user(users, "ana", "ana-password")
    add_user(users, "bob", "bob-password")
    monkeypatch.setenv(AUTH_FILE_ENV, str(users))
    at = AppTest.from_file(str(ENTRY), default_timeout=TIMEOUT)
    at.query_params.update({"run": "run", "head": "0", "cluster": "1", "annotator": "mallory"})
    at.session_state["_annotator"] = "mallory"  # even a name left in the session by single-user mode
    at.run()
    ok(at)
    assert [t.label for t in at.text_input] == ["User name", "Password"]
    assert not at.sidebar.selectbox and not at.title[1:]  # no run picker, no page
    assert [b.label for b in at.button] == ["Sign in"]
    at.text_input[0].input("ana")
    at.text_input[1].input("bob-password")
    at.button[0].click().run()
    ok(at)
    assert [e.value for e in at.error] == ["Not signed in: wrong user name or password."]
    assert [b.label for b in at.button] == ["Sign in"]
    at.text_input[1].input("ana-password")
    at.button[0].click().run()
    at.switch_page("views/clusters.py").run()
    ok(at)
    assert any(m.value == "Signed in as **ana**" for m in at.sidebar.markdown)
    assert not [t for t in at.sidebar.text_input if t.label == "Annotator"]  # no name to type
    text_input(at, "Cluster name").input("dog barking").run()
    click(at, "Rename")
    assert LabelStore.open(run_dir).events()[-1].annotator == "ana"
    assert "annotator" not in at.query_params
    remove_user(users, "ana")  # signed out at the next click
    at.run()
    ok(at)
    assert [b.label for b in at.button] == ["Sign in"]
    at.text_input[0].input("bob")
    at.text_input[1].input("bob-password")
    at.button[0].click().run()
    ok(at)
    click(at, "Sign out")
    assert [b.label for b in at.button] == ["Sign in"] and not at.sidebar.selectbox


def test_header_mode_without_the_header_shows_nothing(app, run_dir, monkeypatch):
    monkeypatch.setenv(AUTH_HEADER_ENV, "X-Forwarded-User")
    at = AppTest.from_file(str(ENTRY), default_timeout=TIMEOUT)
    at.query_params.update({"run": "run", "annotator": "mallory"})
    at.run()
    ok(at)
    [err] = [e.value for e in at.error]
    assert err.startswith("Not signed in") and "`X-Forwarded-User`" in err
    assert not at.sidebar.selectbox and not at.button and not at.text_input


def test_rename_shows_the_name_and_stores_it(app, run_dir, joint):
    at = app("clusters", head="0", cluster="1", annotator="ana")
    assert any(m.value == "Not named yet." for m in at.markdown)
    text_input(at, "Cluster name").input("dog barking").run()
    click(at, "Rename")
    assert any("Cluster 1 is now named 'dog barking'" in s.value for s in at.success)
    assert any(m.value.startswith("Named **dog barking** by ana") for m in at.markdown)
    assert text_input(at, "Cluster name").value == "dog barking"
    index = at.dataframe[0].value
    assert index.loc[1, "name"] == "dog barking" and pd.isna(index.loc[2, "name"])
    store = LabelStore.open(run_dir)
    assert store.cluster_names(0) == {"1": "dog barking"}
    ev = store.events()[-1]
    assert (ev.action, ev.annotator, ev.source, ev.target["based_on"]) == ("rename_cluster", "ana", "studio", 0)
    labels = store.effective_labels(0)
    assert (labels["label"] == "dog barking").sum() == int((joint[:, 0] == 1).sum())
    # the index can be filtered by human label
    [f] = [m for m in at.multiselect if m.label.startswith("Only clusters with members labelled")]
    f.select("dog barking").run()
    ok(at)
    assert at.dataframe[0].value.index.tolist() == [1]


def test_studio_labels_into_the_store_selavi_app_names(app, run_dir, store_backend: StoreBackend, monkeypatch):
    """`selavi app RUN --store URL` (the URL in STORE_ENV): the Studio's edits go to that database, which the
    Labels page names with its password hidden; without --store, to RUN_DIR/labels.sqlite."""
    url = store_backend.url and store_backend.url.replace("://selavi@", "://selavi:pw-x9@")
    if url:
        monkeypatch.setenv(STORE_ENV, url)
    else:
        monkeypatch.delenv(STORE_ENV, raising=False)
    at = app("clusters", head="0", cluster="2", annotator="bob")
    text_input(at, "Cluster name").input("siren").run()
    click(at, "Rename")
    assert any("Cluster 2 is now named 'siren'" in s.value for s in at.success)
    store = LabelStore.open(run_dir, store=url)
    assert store.cluster_names(0) == {"2": "siren"} and store.events()[-1].source == "studio"
    assert (run_dir / "labels.sqlite").exists() == (url is None)
    at.switch_page("views/labels.py").run()
    ok(at)
    shown = " ".join(m.value for m in at.markdown) + " ".join(c.value for c in at.caption)
    if url:
        assert "postgresql+psycopg://selavi:***@" in shown and "pw-x9" not in shown


def test_stale_rename_shows_the_conflict_and_keeps_the_other_edit(app, run_dir):
    at = app("clusters", head="0", cluster="1", annotator="ana")  # ana's page is drawn at version 0
    store = LabelStore.open(run_dir)
    store.rename_cluster(0, 1, "bark", annotator="bob", expected_version=store.version())  # bob, meanwhile
    text_input(at, "Cluster name").set_value("puppy")
    click(at, "Rename")
    [err] = [e.value for e in at.error]
    assert "'puppy' was not saved" in err and "**bob**" in err and "**bark**" in err, err
    assert store.cluster_names(0) == {"1": "bark"}
    assert [e.annotator for e in store.events()] == ["bob"]  # nothing of ana's was written
    # the page now shows bob's name, and a rename from this fresh view goes through
    assert text_input(at, "Cluster name").value == "bark"
    text_input(at, "Cluster name").input("puppy").run()
    click(at, "Rename")
    assert not at.error and store.cluster_names(0) == {"1": "puppy"}
    # a different cluster is never in conflict with bob's edit
    store.rename_cluster(0, 2, "bird", annotator="bob", expected_version=store.version())
    text_input(at, "Cluster name").input("dog").run()
    click(at, "Rename")
    assert not at.error and store.cluster_names(0) == {"1": "dog", "2": "bird"}


def test_clip_corrections_merge_and_split(app, run_dir, joint, clip_ids):
    at = app("clusters", head="0", cluster="1", annotator="ana")
    text_input(at, "Cluster name").input("dog").run()
    click(at, "Rename")
    [pick] = [m for m in at.multiselect if m.label == "Clips"]
    first, second, third = pick.options[:3]
    assert first.endswith("∈ dog")  # the grid says where a clip's label comes from
    cat_clip, rejected_clip = first.split()[0], second.split()[0]
    pick.select(first).run()
    text_input(at, "Their label").input("cat").run()
    click(at, "Give them this label")
    [pick] = [m for m in at.multiselect if m.label == "Clips"]
    assert pick.value == [] and pick.options[0] == f"{cat_clip} ✎ cat"
    pick.select(pick.options[1]).run()
    click(at, "Not this")
    [pick] = [m for m in at.multiselect if m.label == "Clips"]
    assert pick.options[1] == f"{rejected_clip} ✗ not this"
    store = LabelStore.open(run_dir)
    names = {1: "dog"}
    want = expected_labels(clip_ids, joint[:, 0], names, {cat_clip: "cat"}, {rejected_clip})
    got = store.effective_labels(0)
    pd.testing.assert_frame_equal(got[["clip_id", "label", "label_source"]], want, check_dtype=False)

    # "Back to the cluster's name" lifts both corrections (two events, one per kind)
    pick.select(pick.options[0]).select(pick.options[1]).run()
    click(at, "Back to the cluster's name")
    got = store.effective_labels(0)
    want = expected_labels(clip_ids, joint[:, 0], names)
    pd.testing.assert_frame_equal(got[["clip_id", "label", "label_source"]], want, check_dtype=False)

    # merge two clusters from the index under one name
    [merge] = [m for m in at.multiselect if m.label.startswith("Clusters to merge")]
    merge.select(2).select(3).run()
    text_input(at, "Name of the merged clusters").input("bird").run()
    click(at, "Merge")
    assert any("Merged clusters 2, 3 as 'bird'" in s.value for s in at.success)
    assert store.cluster_names(0) == {"1": "dog", "2": "bird", "3": "bird"}

    # split: propose (sizes shown), apply, name a part
    before = store.version()
    assert [e.action for e in store.events()][-2:] == ["reset_clips", "merge_clusters"]  # a reset is one edit
    click(at, "Propose a split")
    table = at.dataframe[-1].value
    assert table["sub-cluster"].tolist() == ["1.a", "1.b"]
    assert table["clips"].sum() == int((joint[:, 0] == 1).sum()) and table["clips"].is_monotonic_decreasing
    assert store.version() == before  # proposing writes nothing
    click(at, "Apply this split")
    sizes = dict(zip(table["sub-cluster"], table["clips"], strict=True))
    clusters = store.clusters(0).set_index("cluster")
    assert {s: int(clusters.loc[s, "size"]) for s in sizes} == sizes
    text_input(at, f"1.b · {sizes['1.b']} clips").input("puppy").run()
    [b] = [b for b in at.button if b.key == "_rename_btn_1.b"]  # each part has its own "Name" button
    b.click().run()
    ok(at)
    assert store.cluster_names(0)["1.b"] == "puppy"
    labels = store.effective_labels(0)
    assert (labels["label"] == "puppy").sum() == sizes["1.b"]
    assert (labels["label"] == "dog").sum() == sizes["1.a"]  # the other part keeps the parent's name


def test_labels_page_vocabulary_undo_snapshot_and_export(app, run_dir, joint, clip_ids):
    store = LabelStore.open(run_dir)
    v = store.version()
    store.rename_cluster(0, 1, "dog", annotator="bob", expected_version=v)
    store.rename_cluster(0, 2, "bird", annotator="bob", expected_version=v)
    in_dog = [c for c, k in zip(clip_ids, joint[:, 0], strict=True) if k == 1]
    store.override_clips([in_dog[0]], "cat", annotator="ana", expected_version=v)
    store.reject_clips(0, [in_dog[1]], annotator="ana", expected_version=v)
    names = {1: "dog", 2: "bird"}
    want = vocab_of(expected_labels(clip_ids, joint[:, 0], names, {in_dog[0]: "cat"}, {in_dog[1]}))
    assert want["cat"] == (1, 1, 0) and want["dog"][0] == len(in_dog) - 2

    at = app("labels", head="0", annotator="ana")
    assert at.title[0].value == "Labels"
    vocab = at.dataframe[0].value
    got = {r.label: (int(r.count), int(r.override), int(r.cluster)) for r in vocab.itertuples()}
    assert got == want
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["own label (per clip)"] == "1"
    assert metrics["labelled clips"] == str(sum(v[0] for v in want.values()))
    history = next(d.value for d in at.dataframe if "what" in d.value)
    assert history["annotator"].tolist() == ["ana", "ana", "bob", "bob"]  # latest first
    assert "rejected 1 clip" in history["what"].iloc[0]

    # undo takes back ana's latest edit (the rejection), never bob's
    click(at, "Undo event 4")
    assert any("Undo done" in s.value for s in at.success)
    want = vocab_of(expected_labels(clip_ids, joint[:, 0], names, {in_dog[0]: "cat"}))
    vocab = at.dataframe[0].value
    assert {r.label: (int(r.count), int(r.override), int(r.cluster)) for r in vocab.itertuples()} == want
    assert store.vocabulary(0).set_index("label").loc["dog", "count"] == want["dog"][0]
    click(at, "Redo event 4")
    assert store.effective_labels(0).set_index("clip_id").loc[in_dog[1], "rejected"]

    # a named snapshot, then an export of it is offered (file name and counts)
    text_input(at, "Snapshot name").input("label set v1").run()
    click(at, "Save snapshot")
    assert store.snapshots()["name"].tolist() == ["label set v1"]
    snaps = next(d.value for d in at.dataframe if "snapshot" in d.value)
    assert snaps["snapshot"].tolist() == ["label set v1"] and snaps["by"].tolist() == ["ana"]
    downloads = at.get("download_button")
    assert [d.label for d in downloads] == ["Download csv", "Download provenance.json"]
    records = sum(want_v[0] for want_v in vocab_of(expected_labels(clip_ids, joint[:, 0], names, {in_dog[0]: "cat"},
                                                                    {in_dog[1]})).values())  # fmt: skip
    n_none = len(clip_ids) - records
    assert any(f"{len(clip_ids)} records · by source: override 1, cluster {records - 1}, none {n_none}" in c.value
               for c in at.caption)  # fmt: skip
    assert any("--format fiftyone" in i.value for i in at.info)
    for fmt in ("json", "kinetics", "vggsound", "labelstudio"):  # every file format has its button
        at.selectbox(key="_exp_fmt").set_value(fmt).run()
        ok(at)
        assert not at.error and at.get("download_button")[0].label == f"Download {fmt}"


def test_unopenable_store_leaves_the_studio_viewable(app, run_dir):
    (run_dir / "labels.sqlite").mkdir()  # a folder where the database file should be
    for page in ("clusters", "map", "labels"):
        at = app(page, head="0", cluster="1", annotator="ana")
        assert any("Labels are unavailable (viewing only)" in w.value for w in at.warning), page
        if page == "clusters":  # browsing works, editing is not offered
            assert at.subheader[0].value == "Cluster 1" and not [b for b in at.button if b.label == "Rename"]


def test_labels_page_spot_check_shows_only_that_label(app, run_dir, joint, clip_ids):
    store = LabelStore.open(run_dir)
    store.rename_cluster(0, 2, "bird", annotator="bob", expected_version=0)
    at = app("labels", head="0", annotator="ana")
    members = {c for c, k in zip(clip_ids, joint[:, 0], strict=True) if k == 2}
    shown = [b.label.split()[1] for b in at.button if b.label.startswith("▶")]
    assert shown and set(shown) <= members and len(shown) == min(12, len(members))


def test_map_colours_and_filters_by_human_label(app, run_dir, joint, clip_ids):
    at = app("map", head="0", annotator="ana")
    assert at.segmented_control[0].options == ["cluster", "ground truth"]  # no human labels yet
    store = LabelStore.open(run_dir)
    store.rename_cluster(0, 1, "dog", annotator="bob", expected_version=0)
    store.label_clips(clip_ids[:2], "cat", annotator="bob", expected_version=1)
    at.run()
    ok(at)
    assert at.segmented_control[0].options == ["cluster", "ground truth", "human label"]
    at.segmented_control[0].set_value("human label").run()
    ok(at)
    want = expected_labels(clip_ids, joint[:, 0], {1: "dog"}, dict.fromkeys(clip_ids[:2], "cat")).set_index("clip_id")
    points, legend = chart(at)
    assert len(points) == len(clip_ids)
    assert points["human"].tolist() == want.loc[points["clip_id"], "label"].fillna("–").tolist()
    colour_of = points.groupby("human")["colour"].agg(set)
    assert all(len(c) == 1 for c in colour_of)  # one colour per label...
    assert len({next(iter(c)) for c in colour_of}) == len(colour_of)  # ...and a different one for each
    assert colour_of["–"] == {"#c8c8c8"}  # unlabelled clips are grey
    assert sorted(legend) == ["(no label)", "cat", "dog"]
    [flt] = [m for m in at.multiselect if m.label == "Show only clips labelled"]
    assert flt.options[-1] == "(no label)" and set(flt.options[:-1]) == {"dog", "cat"}
    flt.select("cat").run()
    ok(at)
    points, legend = chart(at)
    assert sorted(points["clip_id"]) == sorted(clip_ids[:2]) and legend == ["cat"]


def chart(at: AppTest) -> tuple[pd.DataFrame, list[str]]:
    """The map's points (clip id, human label, colour) and legend entries, from the Plotly spec sent to the browser."""
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    main = spec["data"][0]
    points = pd.DataFrame({"clip_id": [c[0] for c in main["customdata"]], "human": [c[-1] for c in main["customdata"]],
                           "colour": main["marker"]["color"]})  # fmt: skip
    return points, [t["name"] for t in spec["data"][1:]]


def test_retrained_run_shows_the_carry_over_and_carries_on_click(app, run_dir, joint, clip_ids):
    """After a re-assignment the names show on no cluster; the banner says where each would go and the button
    carries them (the store holds the carry event); the Labels page keeps saying what was carried."""
    import dataclasses

    from selavi_core.runs.run import Run, write_run

    store = LabelStore.open(run_dir)
    store.rename_cluster(0, 1, "dog", annotator="bob", expected_version=0)
    run = Run(run_dir)
    k = run.clusters
    new = ((joint + 1) % k).astype(np.int32)  # the same clusters, numbered differently
    conf = np.asarray(run.scores("confidence"))
    write_run(run_dir, dataclasses.replace(run.meta, checkpoint_hash="retrained"), run.clip_ids, joint=new, video=new,
              audio=new, confidence=conf, margin=conf / 2, features_video=np.asarray(run.features("video")),
              features_audio=np.asarray(run.features("audio")), priors=run.priors)  # fmt: skip

    at = app("clusters", head="0", cluster="2", annotator="ana")
    assert any("retrained or re-assigned" in w.value for w in at.warning), [w.value for w in at.warning]
    assert LabelStore.open(run_dir).cluster_names(0) == {}  # looking writes nothing, and no name attached
    click(at, "Carry the names over")
    assert any("carried 1 cluster name" in s.value for s in at.success), [s.value for s in at.success]
    assert not any("retrained or re-assigned" in w.value for w in at.warning)
    store = LabelStore.open(run_dir)
    assert store.cluster_names(0) == {"2": "dog"}
    ev = store.events()[-1]
    assert (ev.action, ev.annotator, ev.source) == ("carry_names", "ana", "studio")
    labels = store.effective_labels(0)
    assert (labels["label"] == "dog").sum() == int((joint[:, 0] == 1).sum())
    at.switch_page("views/labels.py").run()
    ok(at)
    assert any("were carried over to this assignment" in i.value for i in at.info)
