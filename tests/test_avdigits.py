"""AV digits (selavi_core/datasets/avdigits.py, `selavi demo-data`): plans, real builds, determinism, fallback sources.

Builds are small (--limit-per-class 1-4); the full fallback plan (2,400 clips) is checked without encoding it.
The real-data tests skip when ../shared/data is absent, the fallback tests when espeak-ng is not installed
(``sources="fallback"`` forces the fallback where ../shared/data exists). Clips are decoded back with PyAV.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
from scipy.io import wavfile
from scipy.signal import correlate, resample_poly

from selavi_core.cli import main as cli
from selavi_core.datasets import avdigits as A
from selavi_core.errors import CatalogError, SelaviError

SPEC = A.SPEC
NAME = re.compile(r"^clips/[a-p]{16}\.mp4$")


def shared_data() -> Path:
    env = os.environ.get("SELAVI_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def fsdd_dir() -> Path:
    return shared_data() / "fsdd" / "recordings"


def mnist_path() -> Path:
    return shared_data() / "mnist-10k.npz"


needs_shared = pytest.mark.skipif(
    not (fsdd_dir().is_dir() and mnist_path().is_file()),
    reason=f"FSDD/MNIST not found under {shared_data()} (set SELAVI_SHARED_DATA to ../shared/data)",
)
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def read_labels(out: Path, columns: tuple[str, ...] = A.LABEL_COLUMNS) -> list[dict[str, str]]:
    with open(out / A.LABELS_FILE, newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == columns
        return list(reader)


def read_fallback_labels(out: Path) -> list[dict[str, str]]:
    return read_labels(out, A.FALLBACK_LABEL_COLUMNS)


def decode(path: Path) -> tuple[list[np.ndarray], np.ndarray, dict]:
    """All RGB frames, the mono audio (untrimmed) and stream facts, with PyAV."""
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        facts = {
            "vcodec": v.codec_context.name,
            "profile": v.codec_context.profile,
            "pix_fmt": v.codec_context.pix_fmt,
            "acodec": a.codec_context.name,
            "aprofile": a.codec_context.profile,
            "rate": a.codec_context.sample_rate,
            "channels": a.codec_context.channels,
        }
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    return frames, audio, facts


def first_frame(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return next(c.decode(video=0)).to_ndarray(format="rgb24")


def build(out: Path, **kw):
    kw.setdefault("show_progress", False)
    return A.build_avdigits(out, **kw)


# ------------------------------------------------------------------------------------------ plans (no data)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_zipf_counts_follow_the_formula_over_a_seeded_class_order(seed):
    counts = A.plan_counts("zipf", seed, 300)
    order = A.zipf_class_order(seed)
    assert sorted(order) == list(range(10))
    assert [counts[d] for d in order] == [round(300 / (rank + 1) ** 1.0) for rank in range(10)]
    assert sum(counts.values()) == 879  # avdigits.md: s = 1.0 gives 879 clips
    assert A.plan_counts("zipf", seed, 300) == counts  # seeded
    assert sum(A.plan_counts("balanced", seed, 300).values()) == 3000


def test_zipf_class_order_depends_on_the_seed():
    assert len({tuple(A.zipf_class_order(s)) for s in range(6)}) > 1
    assert sum(A.plan_counts("zipf", 0, 300, zipf_s=2.0).values()) < 879  # steeper


def test_clip_ids_are_opaque_and_unique():
    ids = [A.clip_id("balanced", 0, i) for i in range(3000)]
    assert len(set(ids)) == 3000
    assert all(re.fullmatch(r"[a-p]{16}", i) for i in ids)  # letters only: no label digit can appear
    assert A.clip_id("balanced", 1, 0) != ids[0] and A.clip_id("zipf", 0, 0) != ids[0]


@needs_shared
@pytest.mark.shared_data
@pytest.mark.parametrize("variant, total", [("balanced", 3000), ("zipf", 879)])
def test_full_plan_from_real_data(variant, total):
    """The whole plan (no clips built): counts, one clip per recording, a distinct image of the right digit."""
    src = A.resolve_sources(mode="real")
    assert src.info["images"]["kind"] == "mnist" and src.info["sounds"]["kind"] == "fsdd"
    plans = A.plan_clips(src, variant, 0)
    assert len(plans) == total
    counts = {d: sum(p.label == d for p in plans) for d in range(10)}
    assert counts == A.plan_counts(variant, 0, 300)
    assert len({p.recording.source_file for p in plans}) == total
    assert len({p.image_index for p in plans}) == total
    for p in plans:
        assert int(p.recording.source_file.split("_")[0]) == p.label
        assert src.image_labels[p.image_index] == p.label
    assert [p.label for p in plans[:40]] != sorted(p.label for p in plans[:40])  # shuffled order


# ------------------------------------------------------------------------------------------ real builds
@pytest.fixture(scope="module")
def real_build(tmp_path_factory):
    if not (fsdd_dir().is_dir() and mnist_path().is_file()):
        pytest.skip(f"FSDD/MNIST not found under {shared_data()}")
    out = tmp_path_factory.mktemp("avd") / "balanced3"
    result = build(out, variant="balanced", seed=0, limit_per_class=3, workers=2)
    return out, result


@needs_shared
@pytest.mark.shared_data
def test_real_build_layout_names_and_labels(real_build):
    out, result = real_build
    assert result.n_clips == 30 and result.built == 30 and not result.skipped
    rows = read_labels(out)
    assert len(rows) == 30
    assert {d: sum(r["label"] == str(d) for r in rows) for d in range(10)} == dict.fromkeys(range(10), 3)
    stems = {Path(r["source_file"]).stem for r in rows}
    for r in rows:
        assert NAME.match(r["path"]), r["path"]  # opaque: 16 letters, no digit at all
        assert not any(stem in r["path"] for stem in stems)
        assert r["split"] == "train" and (out / r["path"]).is_file()
        assert r["source_file"].startswith(f"{r['label']}_{r['speaker']}_")  # the manifest keeps the provenance
    assert sorted(p.name for p in (out / "clips").iterdir()) == sorted(Path(r["path"]).name for r in rows)
    assert [r["path"] for r in rows] == sorted(r["path"] for r in rows)  # row order says nothing about labels

    manifest = json.loads((out / A.MANIFEST_FILE).read_text())
    assert manifest["complete"] and manifest["variant"] == "balanced" and manifest["seed"] == 0
    assert manifest["counts"] == {str(d): 3 for d in range(10)}
    assert manifest["sources"]["images"]["kind"] == "mnist" and manifest["sources"]["sounds"]["kind"] == "fsdd"
    licence = (out / A.LICENSE_FILE).read_text()
    assert "CC BY-SA 4.0" in licence and "Jakobovski" in licence
    assert "CC BY-SA 3.0" in licence and "LeCun" in licence and "share-alike" in licence
    assert 5_000 < result.bytes / result.n_clips < 20_000  # avdigits.md: ~10-13 KB a clip


@needs_shared
@pytest.mark.shared_data
def test_real_clips_decode_to_the_specified_streams(real_build):
    out, _ = real_build
    rows = read_labels(out)
    for r in rows[:6]:
        path = out / r["path"]
        with open(path, "rb") as f:
            head = f.read(4096)
        assert head.find(b"moov") != -1 and (head.find(b"mdat") == -1 or head.find(b"moov") < head.find(b"mdat"))
        frames, audio, facts = decode(path)
        assert facts["vcodec"] == "h264" and facts["pix_fmt"] == "yuv420p" and "4:4:4" not in facts["profile"]
        assert facts["acodec"] == "aac" and facts["aprofile"] == "LC" and facts["channels"] == 1
        assert facts["rate"] == SPEC.sample_rate
        assert len(frames) == 60 and all(f.shape == (128, 128, 3) for f in frames)
        assert 48_000 <= len(audio) < 48_000 + 1024  # AAC pads to a multiple of 1,024: trim
        audio = audio[:48_000]

        # The picture: a light digit on a dark background that moves (pan/zoom) over the clip.
        lum = [f.astype(np.float32).mean(axis=2) for f in frames]
        background = np.median(lum[0])
        assert lum[0].max() - background > 80
        assert np.abs(lum[0] - lum[-1]).mean() > 1.0

        # The sound: this clip's FSDD recording, peak-normalised, somewhere inside 2 s of silence.
        rate, pcm = wavfile.read(fsdd_dir() / r["source_file"])
        g = math.gcd(rate, SPEC.sample_rate)
        ref = resample_poly(pcm.astype(np.float64), SPEC.sample_rate // g, rate // g)
        ref = ref / np.abs(ref).max()
        if len(ref) < 48_000:  # (2 of the 3,000 recordings are longer than the clip and get cut)
            corr = correlate(audio.astype(np.float64), ref, mode="valid", method="fft")
            k = int(np.argmax(corr))
            seg = audio[k : k + len(ref)].astype(np.float64)
            assert corr[k] / (np.linalg.norm(seg) * np.linalg.norm(ref)) > 0.9
            margin = 1024  # AAC smears a little across a frame boundary
            assert np.abs(audio[: max(0, k - margin)]).max(initial=0) < 0.05
            assert np.abs(audio[k + len(ref) + margin :]).max(initial=0) < 0.05
        assert 0.7 < np.abs(audio).max() < 1.05


@needs_shared
@pytest.mark.shared_data
def test_same_seed_same_bytes_other_seed_other_clips(real_build, tmp_path):
    out, _ = real_build
    again = build(tmp_path / "again", variant="balanced", seed=0, limit_per_class=3, workers=1)  # one worker
    assert again.built == 30
    assert (out / A.LABELS_FILE).read_bytes() == (tmp_path / "again" / A.LABELS_FILE).read_bytes()
    rows = read_labels(out)
    for r in rows:
        assert np.array_equal(first_frame(out / r["path"]), first_frame(tmp_path / "again" / r["path"]))
        assert (out / r["path"]).read_bytes() == (tmp_path / "again" / r["path"]).read_bytes()

    other = build(tmp_path / "other", variant="balanced", seed=1, limit_per_class=3, workers=2)
    other_rows = read_labels(tmp_path / "other")
    assert (tmp_path / "other" / A.LABELS_FILE).read_bytes() != (out / A.LABELS_FILE).read_bytes()
    assert {r["path"] for r in other_rows}.isdisjoint({r["path"] for r in rows})
    assert {r["source_file"] for r in other_rows} != {r["source_file"] for r in rows}
    frames0 = {hashlib.sha1(first_frame(out / r["path"]).tobytes()).hexdigest() for r in rows}
    frames1 = {hashlib.sha1(first_frame(tmp_path / "other" / r["path"]).tobytes()).hexdigest() for r in other_rows}
    assert frames0.isdisjoint(frames1)
    assert other.n_clips == 30


@needs_shared
@pytest.mark.shared_data
def test_rerun_is_a_noop_resume_rebuilds_missing_clips_and_conflicts_are_refused(real_build, tmp_path, capsys):
    out, _ = real_build
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    again = build(out, variant="balanced", seed=0, limit_per_class=3, workers=2)
    assert again.skipped and again.built == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps
    assert cli(["demo-data", str(out), "--limit-per-class", "3"]) == 0
    assert "already complete" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps

    with pytest.raises(SelaviError, match="other settings"):
        build(out, variant="zipf", seed=0, limit_per_class=3)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(SelaviError, match="not an AV-digits folder"):
        build(tmp_path / "foreign", limit_per_class=1)

    # An interrupted build (a clip missing) resumes and rewrites exactly that clip.
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    victim = copy / read_labels(copy)[0]["path"]
    original = victim.read_bytes()
    victim.unlink()
    resumed = build(copy, variant="balanced", seed=0, limit_per_class=3, workers=1)
    assert resumed.built == 1 and victim.read_bytes() == original


def test_explicit_missing_sources_are_errors(tmp_path, monkeypatch):
    with pytest.raises(CatalogError, match="FSDD"):
        A.resolve_sources(fsdd=tmp_path / "nope", mnist=None, mode="auto")
    with pytest.raises(CatalogError, match="MNIST"):
        A.resolve_sources(mnist=tmp_path / "nope.npz", mode="auto")
    monkeypatch.setenv("SELAVI_SHARED_DATA", str(tmp_path))  # an empty shared folder
    with pytest.raises(CatalogError):
        A.resolve_sources(mode="real")


# ------------------------------------------------------------------------------------------ fallback
FB = A.FALLBACK


@needs_espeak
def test_default_sources_fall_back_when_shared_data_is_absent(tmp_path, monkeypatch):
    monkeypatch.setenv("SELAVI_SHARED_DATA", str(tmp_path))
    src = A.resolve_sources()
    assert src.info["images"]["kind"] == "sklearn-digits" and src.info["sounds"]["kind"] == "espeak-ng"
    assert src.info["sounds"]["fallback_because_missing"] == str(tmp_path / "fsdd" / "recordings")
    assert src.per_class == src.per_class_capacity() == 240  # 80 speakers x 3 takes of every digit
    assert src.image_variants  # 8x8 digits: ~180 per digit, so clips get variants of them
    assert src.images.shape[1:] == (28, 28) and src.images.dtype == np.uint8


@pytest.fixture(scope="module")
def fallback_sources():
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    return A.resolve_sources(mode="fallback")


def test_fallback_plan_is_a_balanced_set_of_distinct_clips(fallback_sources):
    """The default fallback plan (nothing encoded): 2,400 balanced clips, each with its own espeak-ng call and
    its own image variant; speakers are whole accent+variant voices with every digit in 3 jittered takes."""
    src = fallback_sources
    plans = A.plan_clips(src, "balanced", 0)
    assert len(plans) == 2400 >= 2000
    assert {d: sum(p.label == d for p in plans) for d in range(10)} == dict.fromkeys(range(10), 240)

    # Sound: one distinct espeak-ng call (voice+variant, speed, pitch, word) per clip, saying the clip's digit.
    calls = {(*p.recording.espeak, A.DIGIT_WORDS[p.label]) for p in plans}
    assert len(calls) == len(plans)
    assert all(p.recording.source_file.endswith(":" + A.DIGIT_WORDS[p.label]) for p in plans)
    by_speaker: dict[str, list] = {}
    for p in plans:
        by_speaker.setdefault(p.recording.speaker, []).append(p)
    assert len(by_speaker) == 80 and len({s.split("+")[1] for s in by_speaker}) == 10  # 8 accents x 10 variants
    base = {f"espeak:{v}": (speed, pitch) for v, speed, pitch in A.espeak_speakers()}
    for speaker, clips in by_speaker.items():
        assert {d: sum(c.label == d for c in clips) for d in range(10)} == dict.fromkeys(range(10), 3)
        assert {c.recording.espeak[0] for c in clips} == {speaker.removeprefix("espeak:")}  # one voice
        speed, pitch = base[speaker]
        takes = {c.recording.espeak[1:] for c in clips}
        assert len(takes) > 3  # jittered per take, not one fixed (speed, pitch)
        assert all(abs(s - speed) <= FB.speed_jitter and abs(q - pitch) <= FB.pitch_jitter for s, q in takes)
    assert len(set(base.values())) == 25  # speakers spread over all 5 x 5 base speeds and pitches

    # Picture: a base image of the right digit, used at most twice, and a distinct variant per clip.
    assert all(src.image_labels[p.image_index] == p.label for p in plans)
    assert max(Counter(p.image_index for p in plans).values()) == 2
    assert len({(p.image_index, p.image_variant) for p in plans}) == len(plans)
    assert len({p.image_variant for p in plans}) == len(plans)
    for p in plans:
        v = p.image_variant
        assert FB.stroke[0] <= v.stroke <= FB.stroke[1] and abs(v.rotate) <= FB.rotate_deg
        assert abs(v.shear) <= FB.shear and FB.aspect[0] <= v.aspect <= FB.aspect[1]
        assert FB.elastic[0] <= v.elastic <= FB.elastic[1] and v.background in A.BACKGROUNDS
    # The digit is the only shared factor: every digit gets every background, in about equal shares.
    for d in range(10):
        kinds = Counter(p.image_variant.background for p in plans if p.label == d)
        assert set(kinds) == set(A.BACKGROUNDS) and min(kinds.values()) > 240 / 3 * 0.6

    assert A.plan_clips(src, "balanced", 0) == plans  # seeded
    other = A.plan_clips(src, "balanced", 1)
    assert [p.recording for p in other] != [p.recording for p in plans]
    assert {p.image_variant for p in other}.isdisjoint({p.image_variant for p in plans})


def test_fallback_zipf_and_limit_keep_working(fallback_sources):
    zipf = A.plan_clips(fallback_sources, "zipf", 2)
    counts = {d: sum(p.label == d for p in zipf) for d in range(10)}
    assert counts == A.plan_counts("zipf", 2, 240) and len(zipf) == 703
    assert len({p.recording for p in zipf}) == len(zipf) and len({p.image_variant for p in zipf}) == len(zipf)
    small = A.plan_clips(fallback_sources, "balanced", 2, limit_per_class=7)
    assert len(small) == 70 and {p.label for p in small} == set(range(10))


@needs_espeak
def test_fallback_build_via_cli(tmp_path, capsys):
    out = tmp_path / "fallback"
    args = ["demo-data", str(out), "--fallback", "--variant", "zipf", "--limit-per-class", "4", "--seed", "3"]
    assert cli([*args, "--workers", "2"]) == 0
    printed = capsys.readouterr().out
    assert "sklearn-digits" in printed and "espeak-ng" in printed

    rows = read_fallback_labels(out)
    expected = A.plan_counts("zipf", 3, 4)
    assert {d: sum(r["label"] == str(d) for r in rows) for d in range(10)} == expected
    assert sorted(expected.values(), reverse=True) == [4, 2, 1, 1, 1, 1, 1, 1, 1, 1]
    words = set(A.DIGIT_WORDS)
    for r in rows:
        assert NAME.match(r["path"]) and not any(w in r["path"] for w in words)
        assert r["speaker"].startswith("espeak:") and r["source_file"].endswith(A.DIGIT_WORDS[int(r["label"])])
        assert r["source_file"].startswith(r["speaker"] + ":")
        assert re.fullmatch(
            r"stroke=\S+ rotate=\S+ shear=\S+ aspect=\S+ elastic=\S+ background=\w+", r["image_variant"]
        )
    manifest = json.loads((out / A.MANIFEST_FILE).read_text())
    assert manifest["sources"]["images"]["kind"] == "sklearn-digits"
    assert manifest["sources"]["sounds"]["kind"] == "espeak-ng"
    assert manifest["sources"]["sounds"]["speakers"] == 80
    assert manifest["counts"] == {str(d): n for d, n in expected.items()}
    assert manifest["settings"]["fallback"]["takes"] == FB.takes
    licence = (out / A.LICENSE_FILE).read_text()
    assert "80 synthetic speakers" in licence and "8 English accents x 10" in licence and "elastic" in licence
    assert "share-alike" not in licence

    frames, audio, facts = decode(out / rows[0]["path"])
    assert len(frames) == 60 and frames[0].shape == (128, 128, 3) and facts["rate"] == 24_000
    audio = audio[:48_000]
    assert len(audio) == 48_000 and 0.7 < np.abs(audio).max() < 1.05
    assert (np.abs(audio) < 1e-3).mean() > 0.2  # the word sits inside silence

    assert cli([*args, "--workers", "1"]) == 0  # same settings: nothing to do
    assert "already complete" in capsys.readouterr().out


@pytest.fixture(scope="module")
def fallback_build(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    out = tmp_path_factory.mktemp("avd") / "fallback2"
    result = build(out, sources="fallback", limit_per_class=2, seed=5, workers=2)
    return out, result


def test_fallback_clips_show_and_say_their_planned_digit(fallback_build, fallback_sources):
    """Each decoded clip is its plan: the frames match a re-rendering of its image variant, the sound matches
    its espeak-ng call, and labels.csv names the same digit, speaker, base image and variant."""
    out, result = fallback_build
    assert result.n_clips == 20 and result.built == 20
    rows = {r["path"]: r for r in read_fallback_labels(out)}
    plans = A.plan_clips(fallback_sources, "balanced", 5, limit_per_class=2)
    assert {p.path for p in plans} == set(rows)
    for p in plans[:8]:
        r = rows[p.path]
        assert (int(r["label"]), r["speaker"], int(r["mnist_index"])) == (p.label, p.recording.speaker, p.image_index)
        assert r["source_file"] == p.recording.source_file and r["image_variant"] == p.image_variant.describe()

        frames, audio, _ = decode(out / p.path)
        rng = np.random.default_rng([5, A._STREAM_CLIP, p.index])
        warp = np.random.default_rng([5, A._STREAM_IMAGE_WARP, p.index])
        expected = A.render_fallback_frames(fallback_sources.images[p.image_index], p.image_variant, rng, warp)
        for t in (0, 59):  # H.264 at CRF 23 is close to, not equal to, what was rendered
            assert np.abs(frames[t].astype(np.int16) - expected[t].astype(np.int16)).mean() < 4.0
        assert np.abs(frames[0].astype(np.int16) - frames[59].astype(np.int16)).mean() > 1.0  # pans/zooms

        wave, rate = A.espeak_wave(*p.recording.espeak, A.DIGIT_WORDS[p.label])
        g = math.gcd(rate, SPEC.sample_rate)
        ref = resample_poly(wave, SPEC.sample_rate // g, rate // g)
        audio = audio[:48_000].astype(np.float64)
        corr = correlate(audio, ref, mode="valid", method="fft")
        k = int(np.argmax(corr))
        assert corr[k] / (np.linalg.norm(audio[k : k + len(ref)]) * np.linalg.norm(ref)) > 0.9


def test_fallback_is_deterministic_and_seeded(fallback_build, tmp_path):
    out, _ = fallback_build
    b = build(tmp_path / "b", sources="fallback", limit_per_class=2, seed=5, workers=1)  # one worker
    c = build(tmp_path / "c", sources="fallback", limit_per_class=2, seed=6, workers=2)
    assert b.n_clips == c.n_clips == 20
    assert (out / A.LABELS_FILE).read_bytes() == (tmp_path / "b" / A.LABELS_FILE).read_bytes()
    assert (out / A.LABELS_FILE).read_bytes() != (tmp_path / "c" / A.LABELS_FILE).read_bytes()
    rows = read_fallback_labels(out)
    for r in rows:  # same frames (and bytes: x264 single-threaded, espeak-ng deterministic)
        assert np.array_equal(first_frame(out / r["path"]), first_frame(tmp_path / "b" / r["path"]))
        assert (out / r["path"]).read_bytes() == (tmp_path / "b" / r["path"]).read_bytes()
    firsts_a = {first_frame(out / r["path"]).tobytes() for r in rows}
    firsts_c = {first_frame(tmp_path / "c" / r["path"]).tobytes() for r in read_fallback_labels(tmp_path / "c")}
    assert firsts_a.isdisjoint(firsts_c)


def test_an_older_fallback_build_is_replaced_but_other_requests_are_refused(fallback_build, tmp_path):
    out, _ = fallback_build
    copy = tmp_path / "old"
    shutil.copytree(out, copy)
    manifest = json.loads((copy / A.MANIFEST_FILE).read_text())
    manifest["settings"]["fallback"]["takes"] = 1  # as if built by an older fallback construction
    manifest["settings"]["sources"]["sounds"]["speakers"] = 40
    (copy / A.MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(SelaviError, match="other settings"):
        build(copy, sources="fallback", limit_per_class=2, seed=6)  # another request: still refused
    rebuilt = build(copy, sources="fallback", limit_per_class=2, seed=5, workers=2)
    assert rebuilt.built == 20 and any("older fallback" in n for n in rebuilt.notes)
    assert (copy / A.LABELS_FILE).read_bytes() == (out / A.LABELS_FILE).read_bytes()


# ------------------------------------------------------------------------------------------ pieces
def test_speaker_palette_ties_the_background_hue_to_the_speaker():
    speakers = ["george", "jackson", "lucas", "nicolas", "theo", "yweweler"]
    hues = A.speaker_hues(speakers, seed=0)
    gaps = sorted((hues[a] - hues[b]) % 1.0 for a in speakers for b in speakers if a != b)
    assert gaps[0] == pytest.approx(1 / 6)  # evenly spread, one per speaker
    import colorsys

    for i in range(50):
        rng = np.random.default_rng([0, i])
        speaker = speakers[i % 6]
        fg, bg = A.clip_colours(rng, hues[speaker])
        h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in bg))
        if s > 0.3 and v > 0.1:  # hue is only well defined for a coloured background
            assert min(abs(h - hues[speaker]) % 1.0, 1 - abs(h - hues[speaker]) % 1.0) < SPEC.speaker_hue_jitter + 0.02
        assert colorsys.rgb_to_hsv(*(c / 255 for c in fg))[2] > v + 0.4  # light on dark


def test_fit_audio_places_a_peak_normalised_recording_in_silence():
    rng = np.random.default_rng(0)
    word = np.sin(np.arange(6000) * 0.3) * np.hanning(6000) * 0.2  # 0.75 s at 8 kHz
    out = A.fit_audio(word, 8000, np.random.default_rng(1))
    assert out.shape == (48_000,) and out.dtype == np.float32
    assert np.abs(out).max() == pytest.approx(SPEC.peak, rel=1e-3)
    loud = np.flatnonzero(np.abs(out) > 1e-3)
    assert loud[-1] - loud[0] < 18_000 + 100  # the word is 18,000 samples at 24 kHz, placed whole
    offsets = {
        int(np.flatnonzero(np.abs(A.fit_audio(word, 8000, np.random.default_rng(s))) > 1e-3)[0]) for s in range(8)
    }
    assert len(offsets) > 4  # random offsets

    long = np.concatenate([rng.normal(0, 0.01, 8000), np.sin(np.arange(12000) * 0.2), rng.normal(0, 0.01, 1000)])
    fitted = A.fit_audio(long, 8000, np.random.default_rng(2))  # 2.6 s: keeps the loudest 2 s
    assert fitted.shape == (48_000,)
    sine_energy = (SPEC.peak**2) * 36_000 / 2  # 1.5 s of a unit sine at 24 kHz, scaled to the peak
    assert (fitted.astype(np.float64) ** 2).sum() > 0.98 * sine_energy  # the whole sine is kept


def _ink_box(img: np.ndarray) -> tuple[int, int]:
    ys, xs = np.nonzero(img > 127)
    return int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1  # width, height


def test_vary_image_strokes_stretches_rotates_and_warps():
    img = np.zeros((28, 28), np.uint8)
    img[6:22, 12:16] = 255  # an upright bar: a "1"
    plain = A.ImageVariant(stroke=0.0, rotate=0.0, shear=0.0, aspect=1.0, elastic=0.0, background="flat")
    rng = np.random.default_rng(0)

    base = A.vary_image(img, plain, rng)
    assert base.shape == (4 * 36, 4 * 36) and base.dtype == np.uint8
    w0, h0 = _ink_box(base)
    assert abs(w0 - 16) <= 2 and abs(h0 - 64) <= 2  # the bar, 4x, not moved or bent

    bold = A.vary_image(img, replace(plain, stroke=1.0), rng)
    thin = A.vary_image(img, replace(plain, stroke=-1.0), rng)
    assert (thin > 127).sum() < (base > 127).sum() < (bold > 127).sum()

    wide = A.vary_image(img, replace(plain, aspect=1.2), rng)
    assert _ink_box(wide)[0] > w0 and _ink_box(wide)[1] < h0

    turned = A.vary_image(img, replace(plain, rotate=12.0), rng)
    ys, xs = np.nonzero(turned > 127)
    slope = np.polyfit(ys, xs, 1)[0]  # x per y along the bar; counter-clockwise tilts the top to the left
    assert slope == pytest.approx(math.tan(math.radians(12.0)), abs=0.05)

    warped = [A.vary_image(img, replace(plain, elastic=1.0), np.random.default_rng(s)) for s in (1, 2)]
    assert not np.array_equal(warped[0], warped[1]) and not np.array_equal(warped[0], base)
    moved = np.abs(warped[0].astype(np.int16) - base.astype(np.int16)).mean()
    assert 0.5 < moved < 30  # a small smooth warp, not a different image


def test_fallback_backgrounds():
    bg = (20, 40, 60)
    assert A.clip_background("flat", bg, np.random.default_rng(0)) is None
    grad = A.clip_background("gradient", bg, np.random.default_rng(0)).astype(np.float64)
    assert grad.shape == (128, 128, 3)
    corners = [grad[0, 0], grad[0, -1], grad[-1, 0], grad[-1, -1]]
    assert min(np.abs(c - bg).max() for c in corners) <= 1  # starts at bg in one corner ...
    assert max(np.abs(c - bg).max() for c in corners) > 5  # ... towards another dark colour
    assert grad.mean(axis=2).max() < 0.4 * 255 + 2  # dark: the ink stays the light one
    tex = A.clip_background("texture", bg, np.random.default_rng(0)).astype(np.float64)
    assert np.abs(tex.mean(axis=(0, 1)) - bg).max() < 5
    assert tex[..., 0].std() == pytest.approx(A.FALLBACK.texture_amplitude * 255, rel=0.25)
    assert np.abs(np.diff(tex[..., 0], axis=1)).mean() < 3  # smooth: a texture, not pixel noise
    with pytest.raises(SelaviError):
        A.clip_background("plaid", bg, np.random.default_rng(0))

    # Drawn over a background, the ink keeps its colour and the background shows where there is no ink.
    img = np.zeros((28, 28), np.uint8)
    img[6:22, 12:16] = 255
    frames = A.render_frames(img, np.random.default_rng(0), (250, 250, 250), bg, background=tex.astype(np.uint8))
    coverage = A.render_frames(img, np.random.default_rng(0), (255, 255, 255), (0, 0, 0))[..., 0]  # same poses
    assert frames.shape == (60, 128, 128, 3)
    for t in (0, 59):
        none, full = coverage[t] == 0, coverage[t] == 255
        assert none.mean() > 0.5 and full.sum() > 100
        assert np.array_equal(frames[t][none], tex.astype(np.uint8)[none])
        assert (frames[t][full] == 250).all()
