"""Every Studio page renders under Streamlit's AppTest on a small real run and shows the right numbers.

AppTest runs the real entry script (``app/Home.py``, with ``st.navigation``) and switches pages the
way the sidebar does; media elements are opaque to it, so playback is covered by test_browser.py.
Expected numbers are computed here from the run's files with pandas, independently of the Studio.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from selavi_app import HOME
from selavi_core.studio.runs import RUNS_ENV

ENTRY = HOME  # the installed package's entry script, as `selavi app` runs it
TIMEOUT = 120


@pytest.fixture()
def app(studio_run, monkeypatch):
    monkeypatch.setenv(RUNS_ENV, str(studio_run[1]))
    monkeypatch.setenv("SELAVI_NO_PROGRESS", "1")

    def make(page: str | None = None, **params: str) -> AppTest:
        at = AppTest.from_file(str(ENTRY), default_timeout=TIMEOUT)
        for k, v in params.items():
            at.query_params[k] = v
        at.run()
        if page:
            at.switch_page(f"views/{page}.py").run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    return make


@pytest.fixture(scope="module")
def truth(studio_run) -> pd.DataFrame:
    catalog_dir, run_dir = studio_run
    ids = pd.read_parquet(run_dir / "clips.parquet")["clip_id"]
    cat = pd.read_parquet(catalog_dir / "clips.parquet").set_index("clip_id").loc[ids].reset_index()
    joint = np.load(run_dir / "assignments" / "joint.npy")
    conf = np.load(run_dir / "assignments" / "confidence.npy")
    df = pd.DataFrame({"clip_id": cat["clip_id"], "label": cat["label"]})
    for h in range(joint.shape[1]):
        df[f"h{h}"] = joint[:, h]
        df[f"c{h}"] = conf[:, h]
    return df


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_overview(app, truth):
    at = app()
    assert at.title[0].value == "SeLaVi Studio"
    assert _metric(at, "clips") == f"{len(truth):,}"
    assert _metric(at, "labelled clips") == str(int(truth["label"].notna().sum()))
    assert _metric(at, "classes") == str(truth["label"].nunique())
    assert any("Start with head" in s.value for s in at.success)
    evaluation = at.dataframe[1].value  # the recommendation table, then the evaluation table
    from sklearn.metrics import normalized_mutual_info_score

    lab = truth.dropna(subset=["label"])
    for h in range(3):
        assert evaluation.loc[h, "nmi"] == pytest.approx(normalized_mutual_info_score(lab["label"], lab[f"h{h}"]))
    assert at.query_params["run"] == "run"


@pytest.mark.parametrize("head,cluster", [(1, 2), (0, 1)])
def test_clusters_deep_link(app, truth, head, cluster):
    at = app("clusters", run="run", head=str(head), cluster=str(cluster))
    assert at.title[0].value == f"Clusters of head {head}"
    assert at.subheader[0].value == f"Cluster {cluster}"
    members = truth[truth[f"h{head}"] == cluster]
    assert _metric(at, "clips") == f"{len(members):,}"
    counts = members["label"].value_counts()
    assert _metric(at, "purity") == f"{counts.max() / counts.sum():.0%}"
    play = [b for b in at.button if b.label.startswith("▶")]
    assert len(play) == min(24, len(members))
    best = members.sort_values(f"c{head}", ascending=False, kind="stable")["clip_id"].iloc[0]
    assert play[0].label.startswith(f"▶ {best} ")
    assert at.query_params == {"run": "run", "head": str(head), "cluster": str(cluster)}
    # the cluster index shows every cluster with its size
    index = at.dataframe[0].value
    assert (
        index["size"].sort_index().tolist() == truth[f"h{head}"].value_counts().reindex(range(4), fill_value=0).tolist()
    )


def test_clusters_play_and_borderline_toggle(app, truth):
    at = app("clusters", run="run", head="0", cluster="1")
    members = truth[truth["h0"] == 1].sort_values("c0", ascending=False, kind="stable")
    target = [b for b in at.button if b.label.startswith("▶")][2]
    target.click().run()
    clip = members["clip_id"].iloc[2]
    assert at.query_params.get("clip") == clip
    assert any(clip in c.value and "cluster 1 of head 0" in c.value for c in at.caption)
    at.segmented_control[0].set_value("least confident first (borderline)").run()
    play = [b for b in at.button if b.label.startswith("▶")]
    assert play[0].label.startswith(f"▶ {members['clip_id'].iloc[-1]} ")


def test_compare(app, truth):
    at = app("compare", run="run", head="0", cluster="1", head_b="2")
    assert at.title[0].value == "Compare heads"
    flow = at.dataframe[0].value
    expected = truth[truth["h0"] == 1]["h2"].value_counts()
    assert dict(zip(flow["head 2"], flow["count"], strict=True)) == expected.to_dict()
    assert at.query_params["head_b"] == "2"
    assert any("sit on it" in c.value for c in at.caption)


def test_map(app):
    at = app("map", run="run", head="0")
    assert at.title[0].value == "Map"
    assert not at.warning  # 48 clips: no sampling
    assert [o for o in at.segmented_control[0].options] == ["cluster", "ground truth"]


def test_similar(app, truth, studio_run):
    clip = truth["clip_id"].iloc[5]
    at = app("similar", run="run", head="0", clip=clip)
    assert at.title[0].value == "Similar clips"
    table = at.dataframe[0].value
    assert len(table) == 12 and clip not in table["clip_id"].tolist()
    assert table["similarity"].is_monotonic_decreasing
    assert at.query_params["clip"] == clip


def test_no_run_and_missing_media_do_not_crash(app, monkeypatch, tmp_path):
    from studio_fixtures import make_studio_run

    monkeypatch.setenv(RUNS_ENV, "")
    at = AppTest.from_file(str(ENTRY), default_timeout=TIMEOUT).run()
    assert not at.exception and any("selavi app RUN_DIR" in e.value for e in at.sidebar.error)
    _, run_dir = make_studio_run(tmp_path, n=12, n_sources=2, previews=False)
    monkeypatch.setenv(RUNS_ENV, str(run_dir))
    at = AppTest.from_file(str(ENTRY), default_timeout=TIMEOUT)
    at.query_params.update({"run": "run", "head": "0", "cluster": "0"})
    at.run().switch_page("views/clusters.py").run()
    assert not at.exception
    [b for b in at.button if b.label.startswith("▶")][0].click().run()
    assert not at.exception
    assert any("selavi previews" in w.value for w in at.warning)
