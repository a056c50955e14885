"""The Studio in a real browser: `selavi app` on a small real run, driven by Debian's Chromium.

Checks that a deep link opens the Clusters page, that a clicked clip really plays (video frames and
audio decoded, not only currentTime; ../shared/docs/browser-testing.md), that the Map draws its
WebGL scatter, and writes a screenshot of every page to artifacts/screenshots/.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from browser_helpers import CHROMIUM, SHOTS, TIMEOUT_MS, AppServer, launch_chromium
from browser_helpers import settle as _settle

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed (apt-get install chromium)"),
]

PLAY_CHECK = """async (video) => {
  video.muted = true;
  await video.play();
  await new Promise(r => setTimeout(r, 1200));
  const q = video.getVideoPlaybackQuality();
  return {width: video.videoWidth, frames: q.totalVideoFrames, time: video.currentTime,
          audioBytes: video.webkitAudioDecodedByteCount, error: video.error ? video.error.code : null};
}"""


@pytest.fixture(scope="module")
def server(studio_run, tmp_path_factory):
    """`selavi app RUN_DIR --port P` as a user starts it; yields the base URL."""
    run_dir = tmp_path_factory.mktemp("browser") / "run"
    # the app writes map/, montages/ and labels.sqlite into the run: work on a copy
    shutil.copytree(studio_run[1], run_dir, ignore=shutil.ignore_patterns("labels.sqlite*"))
    app = AppServer(run_dir, run_dir.parent / "app.log")
    try:
        base = app.start()
    except RuntimeError as err:
        pytest.fail(str(err))
    yield base
    app.stop()


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = launch_chromium(p)
        pg = browser.new_page(viewport={"width": 1400, "height": 2000})  # tall: Streamlit scrolls inside the page
        pg.set_default_timeout(TIMEOUT_MS)
        yield pg
        browser.close()


def test_clusters_deep_link_plays_a_clip(server, page):
    page.goto(f"{server}/clusters?run=run&head=1&cluster=2")
    page.get_by_role("heading", name="Clusters of head 1").wait_for()
    page.get_by_role("heading", name="Cluster 2", exact=True).wait_for()
    assert "head=1" in page.url and "cluster=2" in page.url
    assert page.locator("video").count() == 0  # no player until a clip is chosen
    page.get_by_role("button", name="▶").first.click()
    video = page.locator("video")
    video.first.wait_for()
    page.wait_for_url("**clip=*")
    assert video.count() == 1  # one player per page, never one per grid cell
    state = video.first.evaluate(PLAY_CHECK)
    assert state["error"] is None, state
    assert state["width"] > 0 and state["frames"] > 0, state  # video frames really decoded
    assert state["time"] > 0.2, state
    assert state["audioBytes"] > 0, state  # and the sound
    _settle(page)
    page.screenshot(path=str(SHOTS / "clusters.png"), full_page=True)


def test_every_page_renders_and_map_draws(server, page):
    page.goto(f"{server}/?run=run&head=0")
    page.get_by_text("Which head to start with").wait_for()
    _settle(page)
    page.screenshot(path=str(SHOTS / "overview.png"), full_page=True)

    page.get_by_role("link", name="Compare heads").click()
    page.get_by_role("heading", name="Contingency of two heads").wait_for()
    page.locator(".js-plotly-plot").nth(2).wait_for()
    assert "run=run" in page.url and "head=0" in page.url
    _settle(page)
    page.screenshot(path=str(SHOTS / "compare.png"), full_page=True)

    page.get_by_role("link", name="Map").click()
    page.get_by_role("heading", name="Map").wait_for()
    plot = page.locator(".js-plotly-plot").first
    plot.wait_for(timeout=180_000)  # the first visit computes the map (UMAP)
    page.wait_for_function("() => document.querySelector('.js-plotly-plot canvas') !== null")
    trace = page.evaluate(
        """() => { const t = document.querySelector('.js-plotly-plot')._fullData[0];
                   return {type: t.type, n: t._length, id: String(t.customdata[0][0])}; }"""
    )
    assert trace["type"] == "scattergl" and trace["n"] == 48, trace  # every clip, drawn with WebGL
    assert trace["id"].startswith("c0000"), trace  # points carry clip ids, not positions
    _settle(page)
    page.screenshot(path=str(SHOTS / "map.png"), full_page=True)

    page.get_by_role("link", name="Similar clips").click()
    page.get_by_role("heading", name="Similar clips").wait_for()
    page.get_by_text("nearest clips").wait_for()
    _settle(page)
    assert page.get_by_role("textbox", name="Clip id").input_value().startswith("c0000")
    page.screenshot(path=str(SHOTS / "similar.png"), full_page=True)


# ---- a run made by `selavi train` alone: no `selavi previews` ------------------------------------------


@pytest.fixture(scope="module")
def trained_server(tiny_catalog, tmp_path_factory):
    """`selavi train` on the tiny real catalog (H.264/AAC MP4s, moov at the end), then `selavi app` on it."""
    from selavi_core.cli import main

    root = tmp_path_factory.mktemp("trained")
    catalog = root / "catalog"
    shutil.copytree(tiny_catalog, catalog)  # the app builds posters into CATALOG_DIR/previews: work on a copy
    run_dir = root / "trained"
    args = ["train", str(catalog), "--out", str(run_dir), "--epochs", "1", "--heads", "1", "--clusters", "2",
            "--batch-size", "8", "--labellings", "2", "--refine-rounds", "0", "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    assert not (catalog / "previews" / "index.parquet").exists()  # no preview pass
    app = AppServer(run_dir, root / "app.log")
    try:
        base = app.start()
    except RuntimeError as err:
        pytest.fail(str(err))
    yield base, catalog
    app.stop()


def test_a_freshly_trained_run_plays_its_clips_without_previews(trained_server, page):
    import urllib.request

    base, catalog = trained_server
    page.goto(f"{base}/clusters?run=trained&head=0")
    page.get_by_role("heading", name="Clusters of head 0").wait_for()
    page.get_by_role("button", name="▶").first.click()
    video = page.locator("video")
    video.first.wait_for()
    assert video.count() == 1
    src = video.first.evaluate("v => v.currentSrc")
    assert "/selavi-media/" in src and "#t=0.000,2.000" in src and src.endswith(".mp4#t=0.000,2.000"), src
    state = video.first.evaluate(PLAY_CHECK)
    assert state["error"] is None, state
    assert state["width"] > 0 and state["frames"] > 0, state  # video frames really decoded, from the source
    assert state["time"] > 0.2, state
    assert state["audioBytes"] > 0, state  # and the sound
    assert not list((catalog / "previews").glob("*.mp4"))  # played as it is: no preview was encoded
    # the source was served with ranges (the browser reads the trailing moov atom with them)
    req = urllib.request.Request(src.split("#")[0], headers={"Range": "bytes=0-99"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 206 and len(resp.read()) == 100
        assert resp.headers["Content-Range"].startswith("bytes 0-99/") and resp.headers["Content-Type"] == "video/mp4"
    # posters were made on demand: the grid shows images, not placeholders, once they are there
    page.wait_for_function("() => document.querySelectorAll('[data-testid=\"stImage\"] img').length >= 1",
                           timeout=60_000)  # fmt: skip
    assert list((catalog / "previews").glob("*.jpg"))
    _settle(page)
    page.screenshot(path=str(SHOTS / "clusters_trained_no_previews.png"), full_page=True)


def test_media_route_refuses_what_was_not_registered(trained_server):
    import urllib.error
    import urllib.request

    base, _ = trained_server
    for path in ("/selavi-media/" + "0" * 32 + "/x.mp4", "/selavi-media/../../etc/passwd",
                 "/selavi-media/%2e%2e/%2e%2e/etc/hostname"):  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + path, timeout=10)
        assert err.value.code in (400, 404), path  # 400: Streamlit's own path-security middleware
