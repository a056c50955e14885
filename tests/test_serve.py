"""Serving clip media to the browser (selavi_core.studio.serve) and deciding what plays as it is.

The allow-list (only files inside the catalog's media roots and its previews folder: no traversal, no
absolute path elsewhere, no symlink out of a root), range requests answered as a browser needs them
(206 with Content-Range and just those bytes), the ASGI app end to end, the playability rule, and
how the Studio resolves a clip (refusing catalog and previews-index rows that point anywhere else).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from selavi_core.catalog.schema import PROBE_COLUMNS, load_catalog, media_roots
from selavi_core.media.playable import browser_playable
from selavi_core.studio.serve import (
    MediaServer,
    Unsatisfiable,
    allowed_file,
    media_fragment,
    parse_range,
)


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "media"
    (root / "sub").mkdir(parents=True)
    clip = root / "sub" / "clip.mp4"
    clip.write_bytes(bytes(range(256)) * 40)  # 10,240 bytes
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"secret" * 10)
    (root / "escape.mp4").symlink_to(secret)  # a symlink out of the root
    (root / "inside.mp4").symlink_to(clip)  # a symlink that stays inside
    return {"root": root, "clip": clip, "secret": secret}


# ---- the allow-list -----------------------------------------------------------------------------------


def test_allowed_file_refuses_everything_outside_the_roots(tree: dict[str, Path]) -> None:
    root, clip = tree["root"], tree["clip"]
    assert allowed_file(clip, [root]) == clip.resolve()
    assert allowed_file(root / "inside.mp4", [root]) == clip.resolve()
    assert allowed_file(str(root / "sub" / ".." / "sub" / "clip.mp4"), [root]) == clip.resolve()
    refused = [
        tree["secret"],  # an absolute path elsewhere
        "/etc/hostname",
        "/etc/passwd",
        str(root / ".." / ".." / ".." / ".." / "etc" / "passwd"),  # traversal out of the root
        str(root / "sub" / ".." / ".." / "secret.mp4"),
        "../../etc/passwd",  # relative: rows hold absolute paths
        "sub/clip.mp4",
        root / "escape.mp4",  # a symlink escaping the root
        root / "sub",  # a folder
        root / "missing.mp4",
        "",
        str(clip) + "\x00.jpg",
    ]
    for path in refused:
        assert allowed_file(path, [root]) is None, path
    assert allowed_file(clip, []) is None  # no roots: nothing
    assert allowed_file(clip, ["relative/root"]) is None


def test_a_root_that_is_a_prefix_of_another_folder_does_not_admit_it(tmp_path: Path) -> None:
    (tmp_path / "media").mkdir()
    (tmp_path / "media-private").mkdir()
    other = tmp_path / "media-private" / "x.mp4"
    other.write_bytes(b"x")
    assert allowed_file(other, [tmp_path / "media"]) is None


def test_register_gives_urls_only_inside_the_roots_and_rechecks_on_every_request(tree: dict[str, Path]) -> None:
    server = MediaServer()
    root, clip = tree["root"], tree["clip"]
    url = server.url(clip, [root], "t=1.000,2.500")
    assert url is not None and url.startswith("/selavi-media/") and url.endswith("/clip.mp4#t=1.000,2.500")
    token = url.split("/")[2]
    assert server.resolve(token) == (clip.resolve(), "video/mp4")
    assert server.url(tree["secret"], [root]) is None
    assert server.url(root / "escape.mp4", [root]) is None
    assert server.url("/etc/hostname", [root, "/etc"]) is None  # not a media type, even inside a root
    assert server.resolve("0" * 32) is None
    assert MediaServer().register(clip, [root]) != token  # keyed per process: not computable from the path
    # swapped for a symlink out of the root after the URL was given: refused now
    clip.unlink()
    clip.symlink_to(tree["secret"])
    assert server.resolve(token) is None


# ---- ranges -------------------------------------------------------------------------------------------


def test_parse_range() -> None:
    size = 1000
    assert parse_range(None, size) is None and parse_range("", size) is None
    r = parse_range("bytes=0-99", size)
    assert (r.start, r.end, r.length) == (0, 99, 100)
    assert (parse_range("bytes=500-", size).start, parse_range("bytes=500-", size).end) == (500, 999)
    assert (parse_range("bytes=-100", size).start, parse_range("bytes=-100", size).end) == (900, 999)
    assert (parse_range("bytes=-5000", size).start, parse_range("bytes=-5000", size).end) == (0, 999)
    assert parse_range("bytes=990-5000", size).end == 999  # clipped to the file
    for ignored in ("bytes=0-1,5-9", "items=0-9", "bytes=abc", "bytes=9-1", "bytes=5"):
        assert parse_range(ignored, size) is None, ignored
    for bad in ("bytes=1000-", "bytes=5000-6000", "bytes=-0"):
        with pytest.raises(Unsatisfiable):
            parse_range(bad, size)


def _call(app: MediaServer, path: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple:
    """One request through the ASGI app as Starlette's Mount passes it: (status, headers, body)."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(msg: dict) -> None:
        sent.append(msg)

    scope = {"type": "http", "method": method, "path": path, "root_path": "/selavi-media",
             "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]}  # fmt: skip
    asyncio.run(app(scope, receive, send))
    start = sent[0]
    hdrs = {k.decode(): v.decode() for k, v in start["headers"]}
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], hdrs, body


def test_the_asgi_app_answers_ranges_like_a_browser_needs(tree: dict[str, Path]) -> None:
    server = MediaServer()
    clip = tree["clip"]
    data = clip.read_bytes()
    url = server.url(clip, [tree["root"]])
    status, hdrs, body = _call(server, url)
    assert status == 200 and body == data
    assert hdrs["content-type"] == "video/mp4" and hdrs["accept-ranges"] == "bytes"
    assert hdrs["content-length"] == str(len(data))

    status, hdrs, body = _call(server, url, {"Range": "bytes=100-299"})
    assert status == 206 and body == data[100:300]
    assert hdrs["content-range"] == f"bytes 100-299/{len(data)}" and hdrs["content-length"] == "200"

    status, hdrs, body = _call(server, url, {"Range": "bytes=-16"})  # a trailing moov atom
    assert status == 206 and body == data[-16:] and hdrs["content-range"].endswith(f"/{len(data)}")

    status, hdrs, body = _call(server, url, {"Range": "bytes=10000-"})
    assert status == 206 and body == data[10000:]

    status, hdrs, _ = _call(server, url, {"Range": f"bytes={len(data)}-"})
    assert status == 416 and hdrs["content-range"] == f"bytes */{len(data)}"

    status, hdrs, body = _call(server, url, {"Range": "bytes=0-9"}, method="HEAD")
    assert status == 206 and body == b"" and hdrs["content-length"] == "10"

    assert _call(server, url, method="POST")[0] == 405
    assert _call(server, "/selavi-media/" + "0" * 32 + "/x.mp4")[0] == 404
    assert _call(server, "/selavi-media/")[0] == 404


def test_large_ranges_come_in_chunks(tmp_path: Path) -> None:
    big = tmp_path / "big.webm"
    data = np.random.default_rng(0).integers(0, 256, 1_000_000, dtype=np.uint8).tobytes()
    big.write_bytes(data)
    server = MediaServer()
    status, hdrs, body = _call(server, server.url(big, [tmp_path]), {"Range": "bytes=1000-900000"})
    assert status == 206 and body == data[1000:900001] and hdrs["content-type"] == "video/webm"


def test_media_fragment() -> None:
    assert media_fragment(2.5, 4.0) == "t=2.500,4.000"
    assert media_fragment(0, None) == "t=0.000"


# ---- what plays as it is ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("container", "video", "pix", "audio", "has_audio", "ok"),
    [
        ("mp4", "h264", "yuv420p", "aac", True, True),
        ("mp4", "h264", "yuvj420p", None, False, True),
        ("webm", "vp9", "yuv420p", "opus", True, True),
        ("webm", "av1", "yuv420p", None, False, True),
        ("mp4", "hevc", "yuv420p", "aac", True, False),  # Chromium plays the sound, decodes no frame
        ("mp4", "mpeg4", "yuv420p", "aac", True, False),  # MPEG-4 Part 2: the same
        ("mp4", "h264", "yuv420p10le", "aac", True, False),  # 10-bit H.264
        ("mp4", "h264", "yuv444p", "aac", True, False),
        ("matroska", "h264", "yuv420p", "aac", True, False),
        ("avi", "h264", "yuv420p", "mp3", True, False),
        ("webm", "h264", "yuv420p", "opus", True, False),
        ("mp4", "h264", "yuv420p", "pcm_s16le", True, False),
        ("mp4", "h264", "yuv420p", None, True, False),  # sound of unknown format
        (None, "h264", "yuv420p", "aac", True, False),  # a catalog from before the facts were probed
        ("mp4", "h264", None, "aac", True, False),
    ],
)
def test_browser_playable(container, video, pix, audio, has_audio, ok) -> None:
    assert browser_playable(container, video, pix, audio, has_audio).ok is ok


def test_ingest_records_the_probe_facts_and_old_catalogs_stay_readable(tiny_catalog: Path, tmp_path: Path) -> None:
    df = load_catalog(tiny_catalog)
    ok = df[df["status"] == "ok"]
    assert set(ok["container"]) == {"mp4"} and set(ok["audio_codec"]) == {"aac"} and set(ok["pix_fmt"]) == {"yuv420p"}
    assert all(browser_playable(r.container, r.video_codec, r.pix_fmt, r.audio_codec, r.has_audio).ok
               for r in ok.itertuples())  # fmt: skip
    src = json.loads((tiny_catalog / "catalog.json").read_text())["source"]
    assert media_roots(tiny_catalog) == [Path(os.path.realpath(src))]
    # a catalog written before these columns existed: read, with the facts unknown
    old = tmp_path / "old"
    old.mkdir()
    df.drop(columns=list(PROBE_COLUMNS)).to_parquet(old / "clips.parquet", index=False)
    back = load_catalog(old)
    assert all(back[c].isna().all() for c in PROBE_COLUMNS)
    assert not browser_playable(*back.loc[0, ["container", "video_codec", "pix_fmt", "audio_codec", "has_audio"]]).ok
    assert media_roots(old) == []  # no catalog.json: no folder is trusted
    (old / "catalog.json").write_text(json.dumps({"source": str(tmp_path)}))
    assert media_roots(old) == [Path(os.path.realpath(tmp_path))]


# ---- the Studio: what a clip shows, and rows pointing anywhere else --------------------------------------


def _studio_run(tiny_catalog: Path, tmp_path: Path):
    """A run folder over ``tiny_catalog`` (no training needed for media): every clip in cluster 0."""
    import shutil

    from selavi_core.runs.run import RunMeta, write_run
    from selavi_core.studio import open_run

    cat = tmp_path / "catalog"
    shutil.copytree(tiny_catalog, cat)
    df = load_catalog(cat)
    n = len(df)
    meta = RunMeta(catalog_dir=str(cat), catalog_hash="test", heads=1, clusters=2, preset="cpu-small",
                   prior="uniform", source="synthetic")  # fmt: skip
    zeros = np.zeros((n, 1), dtype=np.int64)
    conf = np.ones((n, 1), dtype=np.float32)
    write_run(tmp_path / "run", meta, df["clip_id"].to_numpy(), joint=zeros, video=zeros, audio=zeros,
              confidence=conf, margin=conf, features_video=np.ones((n, 4)), features_audio=np.ones((n, 4)),
              priors=np.full((1, 2), 0.5))  # fmt: skip
    return cat, df, open_run(tmp_path / "run")


def _wait(sr, row: int, timeout: float = 60.0):
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        m = sr.media(row)
        if not m.pending:
            return m
        time.sleep(0.1)
    raise AssertionError("the on-demand build did not finish")


def test_studio_plays_sources_as_they_are_and_refuses_rows_pointing_elsewhere(
    tiny_catalog: Path, tmp_path: Path
) -> None:
    cat, df, sr = _studio_run(tiny_catalog, tmp_path)
    # a browser-playable source with no preview: played as it is, from its window; its poster made on demand
    m = _wait(sr, 0)
    assert m.mp4 is None and m.source == Path(df.loc[0, "path"]) and m.problem is None
    assert m.start_s == 0.0 and m.end_s == pytest.approx(2.0, abs=0.1)
    assert m.poster is not None and m.poster.parent == cat / "previews" and m.poster.read_bytes()[:2] == b"\xff\xd8"
    server = MediaServer()
    assert server.url(m.source, sr.media_roots) is not None and server.url(m.poster, sr.media_roots) is not None

    # catalog rows pointing anywhere else: refused, never queued for a build, never given a URL
    (tmp_path / "outside.mp4").write_bytes(Path(df.loc[1, "path"]).read_bytes())
    bad = df.copy()
    bad.loc[1, "path"] = "../../etc/passwd"
    bad.loc[2, "path"] = "/etc/hostname"
    bad.loc[3, "path"] = str(tmp_path / "outside.mp4")  # a real, playable clip, but outside the media roots
    bad.loc[4, "path"] = str(Path(df.loc[4, "path"]).parent / ".." / ".." / "outside.mp4")
    bad.to_parquet(cat / "clips.parquet", index=False)
    sr2 = _studio_run_reopen(tmp_path)
    for row in (1, 2, 3, 4):
        m = sr2.media(row)
        assert not m.playable and not m.pending and m.poster is None, (row, m)
        assert m.problem.startswith("refused"), m.problem
    assert sr2.on_demand.pending() == 0

    # previews-index rows pointing elsewhere: refused as well
    prev = cat / "previews"
    pd.DataFrame({"clip_id": [df.loc[0, "clip_id"], df.loc[5, "clip_id"]], "mp4": ["/etc/hostname", "../../x.mp4"],
                  "poster": ["/etc/passwd", None], "error": [None, None]}).to_parquet(prev / "index.parquet")  # fmt: skip
    sr3 = _studio_run_reopen(tmp_path)
    for row in (0, 5):  # the index's files are refused; the clip plays its own (allowed) source instead
        m = sr3.media(row, build=False)
        assert m.mp4 is None and m.source == Path(df.loc[row, "path"]), m
        assert m.poster is None or m.poster.is_relative_to(prev), m


def _studio_run_reopen(tmp_path: Path):
    from selavi_core.studio import open_run

    return open_run(tmp_path / "run")


def test_studio_builds_a_preview_on_demand_for_a_file_browsers_do_not_play(tmp_path: Path) -> None:
    from media_factory import make_video

    from selavi_core.cli import main

    src = tmp_path / "src"
    make_video(src / "hevc_like.mp4", vcodec="mpeg4", duration=1.5, fps=12, size=(64, 48))  # MPEG-4 Part 2
    make_video(src / "ok.mp4", duration=1.5, fps=12, size=(64, 48))
    assert main(["ingest", str(src), "--out", str(tmp_path / "cat0")]) == 0
    _, df, sr = _studio_run(tmp_path / "cat0", tmp_path / "s")
    row = int(np.flatnonzero(df["video_codec"].to_numpy() == "mpeg4")[0])
    first = sr.media(row)
    assert first.pending and not first.playable and "preview" in first.problem
    m = _wait(sr, row)
    assert m.mp4 is not None and m.mp4.is_file() and m.poster is not None and m.source is None
    assert m.mp4.parent == tmp_path / "s" / "catalog" / "previews"
    assert sr.media(row).mp4 == m.mp4  # cached: found again without a build
    assert sr.on_demand.pending() == 0
