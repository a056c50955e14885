"""Labelling in a real browser: `selavi app` on a copy of the small real run, driven by Debian's Chromium.

- rename a cluster and give one clip its own label from the grid, export CSV through the download
  button and parse it with the csv module: the cluster's members carry the name, the clip its label;
- SIGKILL the server (no shutdown code runs) and start it again on the same run: the edits are there,
  in the pages and in the store;
- two browser contexts (two annotators) rename two different clusters at the same moment, both from
  the same store version: both names are kept;
- a lasso drawn with the mouse on the Map labels exactly the points Plotly selected.

Screenshots of the Clusters page with a named cluster and of the Labels page go to artifacts/screenshots/.
"""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from browser_helpers import CHROMIUM, SHOTS, TIMEOUT_MS, AppServer, launch_chromium, settle

from selavi_core.labels import LabelStore

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed (apt-get install chromium)"),
]
VIEWPORT = {"width": 1400, "height": 2000}  # tall: Streamlit scrolls inside the page


@pytest.fixture(scope="module")
def app(studio_run, tmp_path_factory):
    from selavi_core.studio import open_run
    from selavi_core.studio.mapping import ensure_map

    ensure_map(open_run(studio_run[1]))  # the map is computed once here, not by the server during a test
    run_dir = tmp_path_factory.mktemp("browser-labels") / "run"
    shutil.copytree(studio_run[1], run_dir, ignore=shutil.ignore_patterns("labels.sqlite*"))
    server = AppServer(run_dir, run_dir.parent / "app.log")
    try:
        server.start()
    except RuntimeError as err:
        pytest.fail(str(err))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser(app):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


def open_page(browser, url: str):
    ctx = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    page = ctx.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    return page


def open_cluster(browser, base: str, cluster: int, annotator: str):
    """A new browser session on the cluster's page, the annotator's name typed in the sidebar (single-user
    mode: a URL never says who edits)."""
    page = open_page(browser, f"{base}/clusters?run=run&head=0&cluster={cluster}")
    page.get_by_role("heading", name=f"Cluster {cluster}", exact=True).wait_for()
    settle(page)
    type_into(page, "Annotator", annotator)
    return page


def type_into(page, label: str, text: str) -> None:
    """Fill a text field and commit it (Enter), then wait for the rerun."""
    field = page.get_by_label(label, exact=True)
    field.fill(text)
    field.press("Enter")
    settle(page)


def test_rename_override_export_and_survive_sigkill(app, browser, tmp_path):
    run_dir = app.run_dir
    joint = np.load(run_dir / "assignments" / "joint.npy")[:, 0]
    ids = pd.read_parquet(run_dir / "clips.parquet")["clip_id"].astype(str).tolist()

    page = open_cluster(browser, app.base, 1, "ana")
    assert page.get_by_text("Not named yet.").is_visible()
    type_into(page, "Cluster name", "dog barking")
    page.get_by_role("button", name="Rename").click()
    page.get_by_text("Named dog barking by ana").wait_for()
    settle(page)  # the rest of the page is still being drawn: the grid and its clip picker

    # one clip of the grid gets its own label
    clips = page.get_by_test_id("stMultiSelect").filter(has=page.get_by_text("Clips", exact=True))
    clips.scroll_into_view_if_needed()  # below the grid: a dropdown opened outside the viewport shows no options
    clips.click()
    option = page.get_by_role("option", name=re.compile(r"^c\d{6}")).first  # (the first option is "Select all")
    cat_clip = option.inner_text().split()[0]
    assert cat_clip in ids and joint[ids.index(cat_clip)] == 1
    option.click()
    page.keyboard.press("Escape")
    settle(page)
    type_into(page, "Their label", "cat")
    page.get_by_role("button", name="Give them this label").click()
    page.get_by_text("1 clip now labelled 'cat'").wait_for()
    poster = page.get_by_test_id("stColumn").filter(has=page.get_by_role("button", name=f"▶ {cat_clip} "))
    poster.get_by_text("✎ cat", exact=True).wait_for()  # the grid shows it, under that clip's poster
    settle(page)
    page.screenshot(path=str(SHOTS / "clusters-named.png"), full_page=True)

    # the Labels page: export CSV through the download button and read it back with the csv module
    page.get_by_role("link", name="Labels").click()
    page.get_by_role("heading", name="Vocabulary of head 0").wait_for()
    page.get_by_role("button", name="Download csv").wait_for()
    settle(page)
    page.screenshot(path=str(SHOTS / "labels.png"), full_page=True)
    with page.expect_download() as download:
        page.get_by_role("button", name="Download csv").click()
    assert download.value.suggested_filename == "run-head0-labels.csv"
    out = tmp_path / "labels.csv"
    download.value.save_as(out)
    with open(out, newline="", encoding="utf-8") as f:
        rows = {r["clip_id"]: r for r in csv.DictReader(f)}
    assert sorted(rows) == sorted(ids)
    for cid, k in zip(ids, joint, strict=True):
        r = rows[cid]
        if cid == cat_clip:
            assert (r["label"], r["label_source"], r["annotator"]) == ("cat", "override", "ana"), r
        elif k == 1:
            assert (r["label"], r["label_source"], r["cluster"], r["annotator"]) == (
                "dog barking",
                "cluster",
                "1",
                "ana",
            )
        else:
            assert (r["label"], r["label_source"], r["annotator"]) == ("", "none", ""), r
    n_dog = int((joint == 1).sum()) - 1

    # SIGKILL the server, start it again on the same run: every acknowledged edit is still there
    app.kill()
    app.start()
    page.context.close()
    page = open_cluster(browser, app.base, 1, "ana")
    page.get_by_text("Named dog barking by ana").wait_for()
    page.get_by_text("✎ cat", exact=True).wait_for()
    page.goto(f"{app.base}/labels?run=run&head=0")
    page.get_by_role("heading", name="Vocabulary of head 0").wait_for()
    settle(page)
    metrics = page.get_by_test_id("stMetric")
    assert metrics.filter(has_text="from a cluster name").get_by_test_id("stMetricValue").inner_text() == str(n_dog)
    assert metrics.filter(has_text="own label (per clip)").get_by_test_id("stMetricValue").inner_text() == "1"
    page.context.close()
    store = LabelStore.open(run_dir)
    assert store.cluster_names(0)["1"] == "dog barking"
    assert store.effective_labels(0).set_index("clip_id").loc[cat_clip, "label"] == "cat"


def test_two_annotators_rename_two_clusters_at_once(app, browser):
    edits = [(2, "bea", "bird song"), (3, "carl", "siren")]
    pages = []
    for cluster, who, name in edits:
        page = open_cluster(browser, app.base, cluster, who)
        type_into(page, "Cluster name", name)
        pages.append(page)
    before = LabelStore.open(app.run_dir).version()
    for page in pages:  # both views were drawn from the same store version; click without waiting
        page.get_by_role("button", name="Rename").click(no_wait_after=True)
    for page, (_, who, name) in zip(pages, edits, strict=True):
        page.get_by_text(f"Named {name} by {who}").wait_for()
        settle(page)
        assert page.get_by_test_id("stAlertContentError").count() == 0
    store = LabelStore.open(app.run_dir)
    names = store.cluster_names(0)
    assert (names["2"], names["3"]) == ("bird song", "siren")
    last = store.events()[-2:]
    assert sorted(e.annotator for e in last) == ["bea", "carl"]
    assert all(e.target["based_on"] == before for e in last)  # neither had seen the other's edit
    for page in pages:
        page.context.close()


SELECTED_IDS = """() => { const t = document.querySelector('.js-plotly-plot')._fullData[0];
  return (t.selectedpoints || []).map(i => String(t.customdata[i][0])); }"""


def test_label_a_lasso_selection_on_the_map(app, browser):
    page = open_page(browser, f"{app.base}/map?run=run&head=0")
    page.get_by_role("heading", name="Map").wait_for()
    settle(page)
    type_into(page, "Annotator", "dan")
    page.wait_for_function("() => document.querySelector('.js-plotly-plot canvas') !== null")
    settle(page)
    box = page.locator(".js-plotly-plot .nsewdrag").first.bounding_box()  # Plotly's drag layer = the plot area
    x0, y0, w, h = box["x"], box["y"], box["width"], box["height"]
    corners = [(0.02, 0.02), (0.6, 0.02), (0.6, 0.98), (0.02, 0.98), (0.02, 0.03)]  # the left 60 %
    page.mouse.move(x0 + corners[0][0] * w, y0 + corners[0][1] * h)
    page.mouse.down()
    for fx, fy in corners[1:]:
        page.mouse.move(x0 + fx * w, y0 + fy * h, steps=8)
    page.mouse.up()
    heading = page.get_by_role("heading", name=re.compile(r"clips? selected"))
    heading.wait_for()
    settle(page)
    n = int(heading.inner_text().split()[0])
    selected = set(page.evaluate(SELECTED_IDS))
    assert 0 < n < 48 and len(selected) == n, (n, len(selected))
    field = page.get_by_label(f"Label for the {n} selected clips", exact=True)
    field.fill("left side")
    field.press("Enter")
    settle(page)
    page.get_by_role("button", name="Label the selection").click()
    page.get_by_text(f"{n} clips labelled 'left side'").wait_for()
    store = LabelStore.open(app.run_dir)
    ev = store.events()[-1]
    assert (ev.action, ev.annotator, ev.source) == ("label_clips", "dan", "studio")
    assert set(ev.target["clips"]) == selected  # exactly the points Plotly selected, by clip id
    labels = store.effective_labels(0).set_index("clip_id")
    assert (labels.loc[sorted(selected), "label"] == "left side").all()
    # the map can now be coloured by human label
    page.get_by_test_id("stButtonGroup").get_by_text("human label", exact=True).click()
    settle(page)
    page.screenshot(path=str(SHOTS / "map-labels.png"), full_page=True)
    page.context.close()
