"""Browser previews: real MP4s and JPEGs, checked by decoding them and reading their bytes."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
from media_factory import make_video, nearest_source_frame
from PIL import Image
from test_io import age, killed_write

from selavi_core.cli import main as selavi_main
from selavi_core.config import PREVIEW
from selavi_core.errors import MediaError, NotMedia
from selavi_core.media import PreviewFiles, build_previews, ensure_preview, preview_key, probe


def top_level_boxes(path: Path) -> list[str]:
    """Types of an MP4's top-level boxes in file order (walks the size/type headers)."""
    data = path.read_bytes()
    boxes, pos = [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
        elif size == 0:
            size = len(data) - pos
        boxes.append(kind.decode("latin-1"))
        assert size >= 8, f"bad box at {pos}"
        pos += size
    assert pos == len(data)
    return boxes


@pytest.fixture(scope="module")
def preview_of_long_clip(long_clip, tmp_path_factory) -> PreviewFiles:
    return ensure_preview(long_clip, 1.0, 3.0, tmp_path_factory.mktemp("previews"))


def test_preview_is_browser_ready_h264_aac(preview_of_long_clip):
    files = preview_of_long_clip
    assert files.mp4.suffix == ".mp4" and files.poster.suffix == ".jpg"
    info = probe(files.mp4)
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    assert info.audio_rate == PREVIEW.audio_rate
    assert info.fps == pytest.approx(PREVIEW.fps)
    assert info.duration_s == pytest.approx(2.0, abs=1 / PREVIEW.fps)
    with av.open(str(files.mp4)) as c:
        v = c.streams.video[0]
        assert v.codec_context.pix_fmt == "yuv420p"
        assert v.codec_context.width % 2 == 0 and v.codec_context.height % 2 == 0
        times = [f.time for f in c.decode(v)]
    assert len(times) == 2 * PREVIEW.fps
    assert np.allclose(np.diff(times), 1 / PREVIEW.fps, atol=1e-4)  # constant frame rate


def test_preview_has_faststart(preview_of_long_clip):
    boxes = top_level_boxes(preview_of_long_clip.mp4)
    assert "moov" in boxes and "mdat" in boxes
    assert boxes.index("moov") < boxes.index("mdat")


def test_preview_shows_the_window(preview_of_long_clip):
    with av.open(str(preview_of_long_clip.mp4)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    # long_clip is 30 fps 128 x 96 (short side below 240: not upscaled); the window starts at 1.0 s
    assert frames[0].shape == (96, 128, 3)
    got = [nearest_source_frame(frames[i], 240, (128, 96), seed=3) for i in (0, 15, 59)]
    assert got == [30, 45, 89]


def test_poster_is_the_middle_frame_as_jpeg(preview_of_long_clip):
    data = preview_of_long_clip.poster.read_bytes()
    assert data[:3] == b"\xff\xd8\xff" and data[-2:] == b"\xff\xd9"
    with Image.open(preview_of_long_clip.poster) as img:
        assert img.format == "JPEG" and img.size == (128, 96)
        rgb = np.asarray(img.convert("RGB"))
    assert nearest_source_frame(rgb, 240, (128, 96), seed=3) == 60  # 1.0 s + half of 2 s


def test_preview_is_idempotent(long_clip, tmp_path):
    first = ensure_preview(long_clip, 0.0, 1.0, tmp_path)
    stamps = (first.mp4.stat().st_mtime_ns, first.poster.stat().st_mtime_ns)
    second = ensure_preview(long_clip, 0.0, 1.0, tmp_path)
    assert second == first
    assert (second.mp4.stat().st_mtime_ns, second.poster.stat().st_mtime_ns) == stamps
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.mp4.name, first.poster.name])


def test_incomplete_preview_is_rebuilt(long_clip, tmp_path):
    files = ensure_preview(long_clip, 0.0, 0.5, tmp_path)
    files.poster.unlink()
    files.mp4.write_bytes(b"")  # as if a previous build had died half way
    again = ensure_preview(long_clip, 0.0, 0.5, tmp_path)
    assert again == files and probe(again.mp4).video_codec == "h264" and again.poster.stat().st_size > 0


def test_preview_key_tracks_window_and_content(tmp_path):
    path = make_video(tmp_path / "a.mp4", duration=1.0, size=(64, 48))
    key = preview_key(path, 0.0, 1.0)
    assert key == preview_key(path, 0.0, 1.0)
    assert key != preview_key(path, 0.0, 0.5)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert key != preview_key(path, 0.0, 1.0)


def test_preview_without_audio_has_no_audio_track(bad_media_dir, tmp_path):
    root, _ = bad_media_dir
    files = ensure_preview(root / "no_audio.mp4", 0.0, 1.0, tmp_path)
    with av.open(str(files.mp4)) as c:
        assert len(c.streams.audio) == 0 and len(c.streams.video) == 1


def test_large_source_is_scaled_to_even_short_side(tmp_path):
    src = make_video(tmp_path / "big.mp4", duration=0.4, size=(500, 282), acodec=None)
    files = ensure_preview(src, 0.0, 0.4, tmp_path / "out")
    info = probe(files.mp4)
    assert min(info.width, info.height) == PREVIEW.short_side
    assert info.width % 2 == 0 and info.height % 2 == 0
    assert info.width / info.height == pytest.approx(500 / 282, rel=0.01)


def test_build_previews_in_parallel_keeps_order_and_errors(bad_media_dir, tmp_path):
    root, _ = bad_media_dir
    items = [
        (root / "ok_vp9_opus.webm", 0.0, 1.0),
        (root / "text.mp4", 0.0, 1.0),
        (root / "ok_mpeg4_mp3.avi", 0.5, 1.5),
        (root / "truncated.mp4", 0.0, 1.0),
        (root / "vidéo_日本" / "clip ü.mp4", 0.0, 1.0),
    ]
    out = tmp_path / "p"
    results = build_previews(items, out, workers=2)
    assert [type(r).__name__ for r in results] == [
        "PreviewFiles",
        "NotMedia",
        "PreviewFiles",
        "TruncatedMedia",
        "PreviewFiles",
    ]
    assert isinstance(results[1], NotMedia) and isinstance(results[3], MediaError)
    for r in (results[0], results[2], results[4]):
        assert probe(r.mp4).fps == pytest.approx(PREVIEW.fps)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left behind
    assert len(list(out.iterdir())) == 6


def test_cli_previews_writes_index(bad_media_dir, tmp_path, capsys):
    root, _ = bad_media_dir
    catalog = tmp_path / "cat"
    catalog.mkdir()
    pd.DataFrame(
        {
            "clip_id": ["a", "b", "c", "d"],
            "path": [str(root / "ok_h264_aac.mp4"), str(root / "text.mp4"), str(root / "empty.mp4"), "rel.mp4"],
            "start_s": [0.0, 0.0, 0.0, 0.5],
            "end_s": [1.0, 1.0, 1.0, 1.0],
            "status": ["ok", "ok", "empty file", "ok"],
        }
    ).to_parquet(catalog / "clips.parquet")
    make_video(catalog / "rel.mp4", duration=1.0, size=(64, 48))  # relative paths are read from the catalog dir
    assert selavi_main(["previews", str(catalog), "--workers", "2"]) == 0
    index = pd.read_parquet(catalog / "previews" / "index.parquet")
    assert list(index.columns) == ["clip_id", "mp4", "poster", "error"]
    assert list(index["clip_id"]) == ["a", "b", "d"]  # status != ok is skipped
    rows = index.set_index("clip_id")
    assert pd.isna(rows.loc["a", "error"]) and "not a media file" in rows.loc["b", "error"]
    assert pd.isna(rows.loc["b", "mp4"])
    for cid in ("a", "d"):
        assert (catalog / "previews" / rows.loc[cid, "mp4"]).is_file()
        assert (catalog / "previews" / rows.loc[cid, "poster"]).is_file()
    assert "2 of 3" in capsys.readouterr().out


def test_previews_remove_the_half_files_of_killed_builds(bad_media_dir, tmp_path, capsys):
    root, _ = bad_media_dir
    catalog = tmp_path / "cat"
    previews = catalog / "previews"
    previews.mkdir(parents=True)
    pd.DataFrame(
        {"clip_id": ["a"], "path": [str(root / "ok_h264_aac.mp4")], "start_s": [0.0], "end_s": [1.0], "status": ["ok"]}
    ).to_parquet(catalog / "clips.parquet")
    killed_mp4 = age(killed_write(previews / "0123456789abcdef01234567.mp4"), 120)
    killed_jpg = age(killed_write(previews / "0123456789abcdef01234567.jpg"), 120)
    just_now = killed_write(previews / "fedcba9876543210fedcba98.mp4")  # maybe another machine's build, going on
    dead_pid = killed_mp4.name.split(".")[-4]
    old_part = previews / f".fedcba9876543210fedcba98.{dead_pid}.0a1b2c3d.part.jpg"  # the earlier naming
    old_part.write_bytes(b"half a poster")
    age(old_part, 7200)
    assert selavi_main(["previews", str(catalog), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "removed 3 half-written files" in out and "1 of 1 clips ready" in out
    assert not killed_mp4.exists() and not killed_jpg.exists() and not old_part.exists()
    assert just_now.exists()

    # a build on demand (the Studio's) cleans its folder before its first build too
    elsewhere = tmp_path / "on-demand"
    elsewhere.mkdir()
    orphan = age(killed_write(elsewhere / "0123456789abcdef01234567.mp4"), 120)
    files = ensure_preview(root / "ok_h264_aac.mp4", 0.0, 1.0, elsewhere)
    assert files.mp4.is_file() and not orphan.exists()


def test_cli_previews_without_catalog_fails_cleanly(tmp_path, capsys):
    assert selavi_main(["previews", str(tmp_path)]) == 2
    assert "clips.parquet" in capsys.readouterr().err
