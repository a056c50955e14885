"""probe and decode_clip on real files encoded by tests/media_factory.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
from media_factory import make_video, nearest_source_frame, synth_audio

from selavi_core.errors import (
    EmptyFile,
    MediaError,
    MediaNotFound,
    NotMedia,
    NoVideoStream,
    TruncatedMedia,
    UnsupportedCodec,
)
from selavi_core.media import Clip, MediaInfo, decode_clip, probe
from selavi_core.media.probe import scan_duration, video_data_end

# container files of make_bad_media_folder: (video codec, audio codec, audio rate as decoded)
KNOWN = {
    "ok_h264_aac.mp4": ("mp4", "h264", "aac", 24_000),
    "ok_vp9_opus.webm": ("webm", "vp9", "opus", 48_000),  # Opus always decodes at 48 kHz
    "ok_h264_aac.mkv": ("matroska", "h264", "aac", 24_000),
    "ok_h264_aac.mov": ("mov", "h264", "aac", 24_000),
    "ok_mpeg4_mp3.avi": ("avi", "mpeg4", "mp3", 24_000),
}
ERROR_TYPES = {
    "no video stream": NoVideoStream,
    "empty file": EmptyFile,
    "truncated": TruncatedMedia,
    "not a media file": NotMedia,
    "unsupported codec": UnsupportedCodec,
}


def shown_frame(t: float, src_fps: float) -> int:
    """Index of the source frame shown at time t (timestamps i / src_fps)."""
    return int(math.floor(t * src_fps + 1e-6))


def best_lag(x: np.ndarray, ref: np.ndarray, max_lag: int) -> int:
    """Lag L maximising the correlation of x[n] with ref[n + L]."""
    n = len(x) - 2 * max_lag
    scores = [
        float(np.dot(x[max_lag : max_lag + n], ref[max_lag + lag : max_lag + lag + n]))
        for lag in range(-max_lag, max_lag + 1)
    ]
    return int(np.argmax(scores)) - max_lag


# ---------------------------------------------------------------- probe


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_probe_reports_known_fields(bad_media_dir, name):
    root, _ = bad_media_dir
    container, vcodec, acodec, arate = KNOWN[name]
    info = probe(root / name)
    assert isinstance(info, MediaInfo)
    assert info.container == container
    assert info.video_codec == vcodec
    assert info.fps == pytest.approx(25.0)
    assert (info.width, info.height) == (160, 120)
    assert abs(info.duration_s - 2.0) <= 1 / 25 + 1e-6
    assert info.has_audio and info.audio_codec == acodec and info.audio_rate == arate
    assert info.audio_channels == 1
    assert info.n_frames in (None, 50)


def test_probe_no_audio_clip(bad_media_dir):
    root, _ = bad_media_dir
    info = probe(root / "no_audio.mp4")
    assert not info.has_audio
    assert info.audio_codec is None and info.audio_rate is None and info.audio_channels is None
    assert info.n_frames == 50


def test_probe_other_fps_and_size(tmp_path):
    path = make_video(tmp_path / "c.mp4", duration=1.5, fps=30, size=(96, 64), sample_rate=16_000)
    info = probe(path)
    assert info.fps == pytest.approx(30.0)
    assert (info.width, info.height) == (96, 64)
    assert info.duration_s == pytest.approx(1.5, abs=1 / 30)
    assert info.audio_rate == 16_000


def test_every_bad_file_raises_its_typed_error(bad_media_dir):
    root, expected = bad_media_dir
    bad = {rel: kw for rel, kw in expected.items() if kw != "ok"}
    assert set(bad.values()) == set(ERROR_TYPES)  # the folder covers every failure kind
    for rel, keyword in bad.items():
        with pytest.raises(ERROR_TYPES[keyword]) as info:
            probe(root / rel)
        assert keyword in info.value.reason, (rel, info.value.reason)
        assert info.value.path == str(root / rel)


def test_every_ok_file_probes(bad_media_dir):
    root, expected = bad_media_dir
    for rel, keyword in expected.items():
        if keyword == "ok":
            assert probe(root / rel).duration_s > 0


def test_probe_error_reasons_are_specific(bad_media_dir):
    root, _ = bad_media_dir
    with pytest.raises(NotMedia, match="not a media file: "):
        probe(root / "text.mp4")
    with pytest.raises(TruncatedMedia, match="truncated: decoded 0 frames"):
        probe(root / "header_only.mkv")
    with pytest.raises(TruncatedMedia, match=r"truncated: video data ends at 0\.\d+ s of 2\.00 s"):
        probe(root / "truncated_tail.mkv")
    with pytest.raises(EmptyFile, match="empty file"):
        probe(root / "empty.mp4")


def test_probe_missing_file_and_folder(tmp_path):
    with pytest.raises(MediaNotFound):
        probe(tmp_path / "nope.mp4")
    with pytest.raises(NotMedia):
        probe(tmp_path)


def test_probe_random_bytes_is_not_media(tmp_path):
    path = tmp_path / "noise.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(MediaError):
        probe(path)


def test_scan_duration_without_headers(bad_media_dir):
    root, _ = bad_media_dir
    assert scan_duration(root / "ok_h264_aac.mkv") == pytest.approx(2.0, abs=1 / 25)


def test_video_data_end_without_a_time_base_reads_on_without_seeking():
    """A stream with no time base (PyAV gives None) cannot be seeked by time: read on, do not fail with TypeError."""
    from fractions import Fraction
    from types import SimpleNamespace

    class Container:
        def seek(self, *args, **kwargs):
            raise AssertionError("no seek without a time base")

        def demux(self, stream):
            tb = Fraction(1, 25)
            return iter([SimpleNamespace(pts=pts, dts=None, duration=1, time_base=tb) for pts in (10, 11, 12)])

    vstream = SimpleNamespace(time_base=None)
    assert video_data_end(Container(), vstream, 0.0, 0.3) == pytest.approx(13 / 25)


# ---------------------------------------------------------------- decode_clip


def test_decode_window_frames_and_audio(av_clip):
    clip = decode_clip(av_clip, 0.5, 1.5, fps=30, short_side=60)
    assert isinstance(clip, Clip)
    assert clip.frames.shape == (30, 60, 80, 3) and clip.frames.dtype == np.uint8
    assert clip.audio.shape == (24_000,) and clip.audio.dtype == np.float32
    assert clip.sample_rate == 24_000 and clip.fps == 30.0 and clip.has_audio
    assert (clip.start_s, clip.end_s) == (0.5, 1.5)
    # 25 fps source resampled to 30 fps: frame i is the source frame shown at 0.5 + i / 30
    got = [nearest_source_frame(f, 50) for f in clip.frames]
    assert got == [shown_frame(0.5 + i / 30, 25) for i in range(30)]
    # audio is the source's [0.5, 1.5) exactly: no priming offset, no drift
    ref = synth_audio(48_000, 24_000, seed=0)[0]
    assert np.corrcoef(clip.audio, ref[12_000:36_000])[0, 1] > 0.95
    assert np.abs(clip.audio).max() <= 1.0


def test_decode_audio_alignment_against_source(av_clip):
    clip = decode_clip(av_clip, 0.25, 1.75, video=False)
    ref = synth_audio(48_000, 24_000, seed=0)[0][6_000:42_000]
    assert best_lag(clip.audio, ref, 1100) == 0  # an AAC priming error would show as a lag of 1024


def test_decode_window_in_the_middle_of_a_long_clip(long_clip):
    clip = decode_clip(long_clip, 5.0, 6.0, fps=30, short_side=48)
    assert clip.frames.shape == (30, 48, 64, 3)
    got = [nearest_source_frame(f, 240, (128, 96), seed=3) for f in clip.frames[::5]]
    assert got == [150 + 5 * k for k in range(6)]
    # seeks to the keyframe before 5.0 s (every 30 frames) instead of decoding 150 frames first
    assert clip.n_decoded <= 2 * 30 + 2
    ref = synth_audio(8 * 24_000, 24_000, seed=3)[0][120_000:144_000]
    assert np.corrcoef(clip.audio, ref)[0, 1] > 0.95


def test_decode_late_window_resampled_down(long_clip):
    clip = decode_clip(long_clip, 6.9, 7.9, fps=10, size=(64, 48))
    assert clip.frames.shape == (10, 48, 64, 3)
    got = [nearest_source_frame(f, 240, (128, 96), seed=3) for f in clip.frames]
    assert got == [shown_frame(6.9 + i / 10, 30) for i in range(10)]


def test_decode_to_end_of_file_has_no_aac_padding(av_clip):
    clip = decode_clip(av_clip, 1.5)  # end_s=None: to the end, at the source's 25 fps
    assert clip.end_s == pytest.approx(2.0)
    assert clip.frames.shape[0] == 12 and clip.fps == 25.0
    assert clip.audio.shape == (12_000,)
    ref = synth_audio(48_000, 24_000, seed=0)[0][36_000:]
    assert np.corrcoef(clip.audio, ref)[0, 1] > 0.95  # real signal up to the last sample


def test_decode_past_the_end_repeats_last_frame_and_pads_silence(av_clip):
    clip = decode_clip(av_clip, 1.8, 2.6, fps=25)
    assert clip.frames.shape[0] == 20 and clip.audio.shape == (19_200,)
    assert [nearest_source_frame(f, 50) for f in clip.frames[:5]] == [45, 46, 47, 48, 49]
    assert all(np.array_equal(f, clip.frames[4]) for f in clip.frames[5:])
    assert np.abs(clip.audio[:4_000]).max() > 0.1
    assert np.abs(clip.audio[5_000:]).max() == 0.0


def test_decode_exact_size_keeps_aspect_by_centre_crop(av_clip):
    clip = decode_clip(av_clip, 0.0, 0.2, fps=25, size=(64, 64))
    assert clip.frames.shape == (5, 64, 64, 3)
    wide = decode_clip(av_clip, 0.0, 0.2, fps=25, short_side=64).frames  # 85 x 64
    off = (wide.shape[2] - 64) // 2
    assert np.abs(clip.frames.astype(int) - wide[:, :, off : off + 64].astype(int)).mean() < 1.0


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_decode_every_container(bad_media_dir, name):
    root, _ = bad_media_dir
    seed = {"ok_h264_aac.mp4": 1, "ok_vp9_opus.webm": 2, "ok_h264_aac.mkv": 3, "ok_h264_aac.mov": 4}.get(name, 5)
    clip = decode_clip(root / name, 0.5, 1.5, fps=25, sample_rate=16_000)
    assert clip.frames.shape == (25, 120, 160, 3)
    assert clip.audio.shape == (16_000,) and clip.has_audio
    got = [nearest_source_frame(f, 50, seed=seed) for f in clip.frames[::6]]
    assert got == [12 + 6 * k for k in range(5)]
    assert np.abs(clip.audio).max() > 0.1


def test_no_audio_clip_decodes_with_silence(bad_media_dir):
    root, _ = bad_media_dir
    clip = decode_clip(root / "no_audio.mp4", 0.0, 1.0, fps=25)
    assert not clip.has_audio
    assert clip.audio.shape == (24_000,) and not clip.audio.any()
    assert clip.frames.shape == (25, 120, 160, 3)


def test_non_ascii_path(bad_media_dir):
    root, expected = bad_media_dir
    rel = next(r for r in expected if not r.isascii())
    assert probe(root / rel).has_audio
    clip = decode_clip(root / rel, 0.0, 1.0, fps=10, short_side=32)
    assert clip.frames.shape == (10, 32, 43, 3)  # 160 x 120 scaled to short side 32


def test_decode_errors_are_typed(bad_media_dir, tmp_path):
    root, _ = bad_media_dir
    with pytest.raises(TruncatedMedia, match="truncated: decoded 0 frames"):
        decode_clip(root / "header_only.mkv", 0.0, 1.0)
    with pytest.raises(TruncatedMedia):
        decode_clip(root / "truncated.mp4", 0.0, 1.0)
    with pytest.raises(NoVideoStream):
        decode_clip(root / "audio_only.mp4", 0.0, 1.0)
    with pytest.raises(UnsupportedCodec):
        decode_clip(root / "unsupported_codec.mp4", 0.0, 1.0)
    with pytest.raises(NotMedia):
        decode_clip(root / "text.mp4", 0.0, 1.0)
    with pytest.raises(EmptyFile):
        decode_clip(root / "empty.mp4", 0.0, 1.0)
    with pytest.raises(MediaNotFound):
        decode_clip(tmp_path / "missing.mp4")


def test_decode_rejects_bad_windows(av_clip):
    with pytest.raises(ValueError):
        decode_clip(av_clip, 1.0, 0.5)
    with pytest.raises(ValueError):
        decode_clip(av_clip, -0.1, 0.5)


def test_stereo_is_downmixed_to_mono(tmp_path):
    # MP4 keeps sample-exact audio timing (Matroska rounds timestamps to 1 ms, i.e. 48 samples here)
    path = make_video(tmp_path / "stereo.mp4", channels=2, sample_rate=48_000, duration=1.0)
    assert probe(path).audio_channels == 2
    clip = decode_clip(path, 0.2, 0.8, sample_rate=24_000)
    assert clip.audio.shape == (14_400,)
    ref = synth_audio(48_000, 48_000, seed=0)[0][::2]  # the chirp is far below 12 kHz: decimation is exact enough
    assert best_lag(clip.audio, ref[4_800 - 500 : 19_200 + 500], 500) == 500
    assert np.corrcoef(clip.audio, ref[4_800:19_200])[0, 1] > 0.9
