"""Every tunable number of SeLaVi Studio, in one typed place.

The ``paper`` preset is SeLaVi exactly as specified (../shared/docs/selavi-method.md): 30 frames at
112 px over 1 s, a 257-band log-mel of 1 s at 24 kHz, R(2+1)D-18 and ResNet-9 at full width, SGD with
the official recipe. ``cpu-small`` runs the same code path with smaller inputs and narrower encoders
so that a few thousand clips train on two CPU cores in minutes. Code elsewhere takes a ``Preset``
(or one of its parts) rather than reading loose constants, and ``Preset.validate`` refuses values that
cannot run, naming the field, before training or assignment starts. Why the presets hold the numbers they
do (the measurements behind them) is in docs/experiments.md.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from selavi_core.errors import SelaviError


class ConfigError(SelaviError):
    """A setting that cannot run; the message names the field (``schedule.audio_weight``) and the value.

    ``field``, ``value`` and ``allowed`` (the values it may take, e.g. ``>= 1``) are kept apart so that a
    command can say the same with its flag instead of the field (``for_flags``).
    """

    def __init__(self, message: str, *, field: str | None = None, value: Any = None, allowed: str | None = None):
        super().__init__(message)
        self.field = field
        self.value = value
        self.allowed = allowed

    def for_flags(self, flags: Mapping[str, str]) -> ConfigError:
        """The error in the words of the command line when ``flags`` (field -> flag) has its field, e.g.
        ``--batch-size must be >= 1, got 0`` for ``optim.batch_size``; else itself."""
        flag = flags.get(self.field or "")
        if flag is None or self.allowed is None:
            return self
        return ConfigError(
            f"{flag} must be {self.allowed}, got {self.value!r}",
            field=self.field,
            value=self.value,
            allowed=self.allowed,
        )


def _require(ok: bool, name: str, rule: str, value: Any, allowed: str | None = None) -> None:
    """Raise ``ConfigError`` "NAME must RULE, got VALUE" unless ``ok``; ``allowed``: the range in a few words."""
    if not ok:
        raise ConfigError(f"{name} must {rule}, got {value!r}", field=name, value=value, allowed=allowed)


def _positive(name: str, value: Any) -> None:
    ok = isinstance(value, int | float) and math.isfinite(value) and value > 0
    _require(ok, name, "be positive", value, "> 0")


def _at_least(name: str, value: Any, low: float) -> None:
    ok = isinstance(value, int | float) and math.isfinite(value) and value >= low
    _require(ok, name, f"be >= {low:g}", value, f">= {low:g}")


def _within(name: str, value: Any, low: float, high: float, *, open_low: bool = False, open_high: bool = False) -> None:
    ok = (
        isinstance(value, int | float)
        and math.isfinite(value)
        and (low < value if open_low else low <= value)
        and (value < high if open_high else value <= high)
    )
    interval = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
    _require(ok, name, f"lie in {interval}", value, f"in {interval}")


def check_flag(flag: str, value: Any, low: float) -> None:
    """A command-line value that no preset holds (``--workers``, ``--seed``): ``ConfigError`` "FLAG must be >= LOW,
    got VALUE" unless it was not given (None) or is at least ``low``. The preset's own fields are checked by
    ``Preset.validate`` (``selavi train`` rewords its errors with the flag)."""
    if value is not None:
        _at_least(flag, value, low)


def check_head(flag: str, head: int, heads: int) -> None:
    """A head index given on the command line: ``ConfigError`` "FLAG must be in [0, H - 1]" for a run of ``heads``."""
    ok = isinstance(head, int) and 0 <= head < heads
    _require(ok, flag, f"be a head of this run, 0 to {heads - 1}", head, f"0 to {heads - 1}")


def _one_of(name: str, value: Any, choices: tuple[str, ...]) -> None:
    _require(value in choices, name, f"be one of {', '.join(choices)}", value, f"one of {', '.join(choices)}")


#: ``ModelSpec.fusion``: modality as augmentation (SeLaVi) or one set of heads on concatenated features.
FUSIONS = ("augment", "concat")
#: ``OptimSpec.optimizer``.
OPTIMIZERS = ("sgd", "adam")
#: ``ScheduleSpec.posteriors_from``: an extra augmented pass per labelling, or the training steps' posteriors.
POSTERIOR_SOURCES = ("pass", "training")
#: ``RefineSpec.target``: the training prior's sizes or equal sizes.
REFINE_TARGETS = ("prior", "uniform")

#: Pixel normalisation of SeLaVi's video transforms (all channels share it).
VIDEO_MEAN = 0.45
VIDEO_STD = 0.225

#: Files we treat as media when walking a folder. Everything else is ignored, except that a file
#: with one of these suffixes that does not decode becomes an error row, never a silent skip.
VIDEO_SUFFIXES = (
    ".mp4",
    ".m4v",
    ".mov",
    ".mkv",
    ".webm",
    ".avi",
    ".mpg",
    ".mpeg",
    ".ts",
    ".flv",
    ".wmv",
    ".3gp",
    ".ogv",
    ".gif",
)


@dataclass(frozen=True)
class AudioSpec:
    """Log-mel front end, parameterised exactly like python_speech_features.logfbank."""

    sample_rate: int = 24_000
    seconds: float = 1.0
    n_mels: int = 257
    n_fft: int = 1024
    win_s: float = 0.020
    hop_s: float = 0.010
    preemph: float = 0.97
    low_hz: float = 0.0
    high_hz: float | None = None  # None means Nyquist
    volume_jitter: float = 0.1  # training gain drawn from U(1 - j, 1 + j)
    spec_augment: bool = False  # training time and frequency masks on the log-mel
    # Training warp of the log-mel (0 = none): time stretch by up to this fraction and a mel-axis
    # stretch/shift of up to this fraction (vocal-tract-length-like), drawn per clip.
    max_time_stretch: float = 0.0
    max_freq_warp: float = 0.0
    # Training roll of the log-mel by a random number of frames (circular). When a window holds a whole
    # sound in silence, where the sound starts is a per-clip fingerprint that only this modality sees.
    time_roll: bool = False
    exact: bool = True  # float64 log-mel, identical to python_speech_features (official checkpoints need it)

    def validate(self, name: str = "audio") -> None:
        for f in ("sample_rate", "seconds", "n_mels", "n_fft", "win_s", "hop_s"):
            _positive(f"{name}.{f}", getattr(self, f))
        _within(f"{name}.preemph", self.preemph, 0.0, 1.0)
        _at_least(f"{name}.low_hz", self.low_hz, 0.0)
        if self.high_hz is not None:
            _within(f"{name}.high_hz", self.high_hz, self.low_hz, self.sample_rate / 2)
        for f in ("volume_jitter", "max_time_stretch", "max_freq_warp"):
            _within(f"{name}.{f}", getattr(self, f), 0.0, 1.0, open_high=True)

    @property
    def win_length(self) -> int:
        return int(round(self.win_s * self.sample_rate))

    @property
    def hop_length(self) -> int:
        return int(round(self.hop_s * self.sample_rate))

    @property
    def n_samples(self) -> int:
        return int(round(self.seconds * self.sample_rate))

    @property
    def n_frames(self) -> int:
        """Frames that logfbank yields for ``n_samples`` (1 s at 24 kHz gives 99)."""
        n, w, h = self.n_samples, self.win_length, self.hop_length
        if n <= w:
            return 1
        return 1 + -(-(n - w) // h)


@dataclass(frozen=True)
class VideoSpec:
    """The clip a video encoder sees: ``num_frames`` over ``seconds``, cropped to ``crop``."""

    num_frames: int = 30
    seconds: float = 1.0
    crop: int = 112
    train_short_side: tuple[int, int] = (128, 160)  # random rescale range during training
    mean: float = VIDEO_MEAN
    std: float = VIDEO_STD
    colour_augment: bool = False  # per-clip channel shuffle / grey / inversion / contrast
    # Per-clip canonical contrast: grey, standardised over the clip, sign chosen so the sparse part is
    # positive. Removes a clip's colours (a fingerprint on sets like AV digits) instead of randomising them.
    standardise: bool = False
    # Extra geometric jitter of the training crop (0 = SeLaVi's crop and flip only): rotation in degrees
    # and shear, drawn per clip. Small data sets need it: a clip's exact shape is a fingerprint to memorise.
    max_rotate_deg: float = 0.0
    max_shear: float = 0.0

    def validate(self, name: str = "video") -> None:
        for f in ("num_frames", "seconds", "crop", "std"):
            _positive(f"{name}.{f}", getattr(self, f))
        lo, hi = self.train_short_side
        _require(1 <= lo <= hi, f"{name}.train_short_side", "be a range (low, high) with 1 <= low <= high", (lo, hi))
        _at_least(f"{name}.max_rotate_deg", self.max_rotate_deg, 0.0)
        _at_least(f"{name}.max_shear", self.max_shear, 0.0)


@dataclass(frozen=True)
class CacheSpec:
    """Where training windows come from: the decoded uint8 cache, built once per catalog and preset, or the
    original files.

    ``enabled`` (cpu-small): every clip is decoded once into memory-mapped arrays (decoding every epoch is too
    slow on two cores); the build first checks that the arrays fit on the disk. Disabled (paper): each batch
    decodes its random windows from the original files at training time, in DataLoader workers
    (``OptimSpec.workers``); at 30 fps, 128 px and 10 s a cached clip would take 14.7 MB (2.9 TB for
    VGG-Sound's 200k clips). ``short_side`` is the decoded frames' short side either way (a centre square of
    it), ``fps`` and ``max_seconds`` only shape the cache (windows from files are decoded at the video's own
    ``num_frames / seconds``).
    """

    fps: float = 30.0
    short_side: int = 128
    max_seconds: float = 10.0
    enabled: bool = True

    def validate(self, name: str = "cache") -> None:
        for f in ("fps", "short_side", "max_seconds"):
            _positive(f"{name}.{f}", getattr(self, f))
        _require(isinstance(self.enabled, bool), f"{name}.enabled", "be true or false", self.enabled)


@dataclass(frozen=True)
class ModelSpec:
    video_widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    audio_widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    video_layers: tuple[int, int, int, int] = (2, 2, 2, 2)  # BasicBlocks per stage; (2,2,2,2) is R(2+1)D-18
    heads: int = 10
    clusters: int | None = None  # None: the number of ground-truth classes, else 100
    dropout: float = 0.3
    fusion: str = "augment"  # one of FUSIONS

    def validate(self, name: str = "model") -> None:
        for f in ("video_widths", "audio_widths", "video_layers"):
            value = getattr(self, f)
            ok = len(value) == 4 and all(isinstance(v, int) and v >= 1 for v in value)
            _require(ok, f"{name}.{f}", "be four positive integers", value)
        _at_least(f"{name}.heads", self.heads, 1)
        if self.clusters is not None:
            _at_least(f"{name}.clusters", self.clusters, 1)
        _within(f"{name}.dropout", self.dropout, 0.0, 1.0, open_high=True)
        _one_of(f"{name}.fusion", self.fusion, FUSIONS)

    @property
    def video_dim(self) -> int:
        return self.video_widths[-1]

    @property
    def audio_dim(self) -> int:
        return self.audio_widths[-1]


@dataclass(frozen=True)
class SinkhornSpec:
    lam: float = 20.0
    tol: float = 0.1
    max_iter: int = 2000
    check_every: int = 10  # iterations between stopping-error checks (SeLaVi: 10)

    def validate(self, name: str = "sinkhorn") -> None:
        _positive(f"{name}.lam", self.lam)
        _at_least(f"{name}.tol", self.tol, 0.0)
        _at_least(f"{name}.max_iter", self.max_iter, 1)
        _at_least(f"{name}.check_every", self.check_every, 1)

    def solver_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the Sinkhorn solvers (``selavi_core.selflabel.sinkhorn``) for this spec."""
        return {"lam": self.lam, "tol": self.tol, "max_iter": self.max_iter, "check_every": self.check_every}


@dataclass(frozen=True)
class ScheduleSpec:
    """When and how pseudo-labels are recomputed during training."""

    n_opts: int = 100  # t_j = T (j / (n_opts - 1)) ** power
    power: float = 1.5
    groups: int = 2  # decorrelated heads: one augmented pass per group
    # The cluster-size prior, the only way a prior enters training (``selavi train --prior`` sets it):
    # uniform | gauss | gauss:SD | gauss-reciprocal | zipf:S | PATH (K numbers)
    prior: str = "gauss"
    gauss_sd: float = 0.1  # the Gaussian prior's sd when ``prior`` gives none ("gauss")
    bn_warmup_batches: int = 20
    # The first labelling aligns each audio head to its video head on up to this many clips (a sum over rows:
    # a large sample pins the permutation down)
    align_max_rows: int = 20_000
    # Temper p_v and p_a to the same mean confidence before their product goes to Sinkhorn (off in
    # the paper): otherwise the sharper modality decides the labels alone (see inference.equalise_confidence).
    equalise_confidence: bool = False
    # Share of the audio in the labels: Sinkhorn sees (1 - w) log p_v + w log p_a (0.5 = SeLaVi's p_v p_a).
    # Below 0.5 a factor only the sound carries (who speaks) enters the labels less. Clusters are read from p_v p_a.
    audio_weight: float = 0.5
    # If set, the audio's share moves linearly from audio_weight at the first labelling to this at the end.
    audio_weight_final: float | None = None
    # Where a labelling reads the posteriors (one of POSTERIOR_SOURCES). "pass" is SeLaVi's extra augmented
    # eval-mode pass per group of heads; "training" reuses each clip's posteriors from its last training step,
    # so a labelling costs only Sinkhorn. "training" needs one process (torchrun, a run's first labelling and
    # --resume use the pass) and keeps H x N x K float32 per modality in memory.
    posteriors_from: str = "pass"
    # With posteriors_from="training": the kept posteriors are a running mean, new = m old + (1 - m) step.
    memory_momentum: float = 0.0
    align: bool = True  # align each audio head's clusters to its video head's at the first labelling (exact LSA)

    def validate(self, name: str = "schedule") -> None:
        _at_least(f"{name}.n_opts", self.n_opts, 1)
        _positive(f"{name}.power", self.power)
        _at_least(f"{name}.groups", self.groups, 1)
        _require(
            isinstance(self.prior, str) and self.prior.strip() != "",
            f"{name}.prior",
            "name a prior",
            self.prior,
            "a prior (uniform, gauss, gauss:SD, gauss-reciprocal, zipf:S or a file)",
        )
        _at_least(f"{name}.gauss_sd", self.gauss_sd, 0.0)
        _at_least(f"{name}.bn_warmup_batches", self.bn_warmup_batches, 0)
        _at_least(f"{name}.align_max_rows", self.align_max_rows, 1)
        _within(f"{name}.audio_weight", self.audio_weight, 0.0, 1.0)
        if self.audio_weight_final is not None:
            _within(f"{name}.audio_weight_final", self.audio_weight_final, 0.0, 1.0)
        _one_of(f"{name}.posteriors_from", self.posteriors_from, POSTERIOR_SOURCES)
        _within(f"{name}.memory_momentum", self.memory_momentum, 0.0, 1.0, open_high=True)


@dataclass(frozen=True)
class RefineSpec:
    """Self-labelling of the heads alone on frozen features, after the last epoch (not in the paper).

    A short CPU schedule ends while the heads still trail the encoders; on the frozen, un-augmented features
    of every clip, rounds of Sinkhorn labels from the heads' own posteriors and a few epochs of the heads on
    them take seconds and let the heads catch up (docs/experiments.md).
    """

    rounds: int = 0  # 0 = off, SeLaVi as published
    epochs: int = 2  # passes of the heads over the features per round
    # The audio's share in these labels: below 0.5 the picture decides more than the audio's own factor (speaker)
    audio_weight: float = 0.3
    batch_size: int = 256
    lr: float = 1e-3  # Adam
    # The cluster sizes these labels are held to (one of REFINE_TARGETS): the training prior (rank-matched as in
    # training) or equal sizes (SeLa's equipartition), which suits balanced sets on frozen features.
    target: str = "prior"
    # How firmly those sizes hold, in (0, 1] (``sinkhorn_knopp``'s ``marginal_strength``): 1 forces them exactly;
    # below 1 they are a KL pull, so a class larger than its share keeps its clips instead of being split to fit
    # (imbalanced sets), while the pull still keeps one cluster from swallowing the rest.
    marginal_strength: float = 1.0

    def validate(self, name: str = "refine") -> None:
        _at_least(f"{name}.rounds", self.rounds, 0)
        _at_least(f"{name}.epochs", self.epochs, 1)
        _at_least(f"{name}.batch_size", self.batch_size, 1)
        _within(f"{name}.audio_weight", self.audio_weight, 0.0, 1.0)
        _positive(f"{name}.lr", self.lr)
        _one_of(f"{name}.target", self.target, REFINE_TARGETS)
        _within(f"{name}.marginal_strength", self.marginal_strength, 0.0, 1.0, open_low=True)


@dataclass(frozen=True)
class ContrastSpec:
    """Cross-modal correspondence (symmetric InfoNCE) beside the self-labelling loss (not in the paper).

    From the first step it rewards what picture and sound share, so the labels do not have to wait for
    one modality to happen upon the shared factor (``selavi_core.training.contrast``).
    """

    weight: float = 0.0  # 0 = off, SeLaVi as published; the loss is CE_selavi + weight * InfoNCE
    dim: int = 64  # shared projection space
    temperature: float = 0.1

    def validate(self, name: str = "contrast") -> None:
        _at_least(f"{name}.weight", self.weight, 0.0)
        if self.weight > 0:
            _at_least(f"{name}.dim", self.dim, 1)
            _positive(f"{name}.temperature", self.temperature)


@dataclass(frozen=True)
class OptimSpec:
    optimizer: str = "sgd"  # one of OPTIMIZERS
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-5
    warmup_epochs: int = 10  # linear warm-up from lr to lr * world_size
    batch_size: int = 16
    epochs: int = 200
    # If set, small data sets train for more epochs: epochs = max(epochs, round(train_samples / clips)): a recipe
    # tuned on 3,000 clips needs its number of steps, not its number of passes.
    train_samples: int | None = None
    # Learning-rate factor of the audio encoder and heads, so that neither modality becomes confident in its own
    # clusters before the other learns anything. 1 = the paper.
    audio_lr_scale: float = 1.0
    seed: int = 31
    # DataLoader worker processes that decode and augment batches (None: one per core, 0: in the training process).
    # Batches drawn in workers are seeded per batch, so they do not depend on the number of workers, but they
    # differ from in-process batches, which draw from the trainer's generator in order.
    workers: int | None = None

    def validate(self, name: str = "optim") -> None:
        _one_of(f"{name}.optimizer", self.optimizer, OPTIMIZERS)
        _positive(f"{name}.lr", self.lr)
        _within(f"{name}.momentum", self.momentum, 0.0, 1.0, open_high=True)
        _at_least(f"{name}.weight_decay", self.weight_decay, 0.0)
        _at_least(f"{name}.warmup_epochs", self.warmup_epochs, 0)
        _at_least(f"{name}.batch_size", self.batch_size, 1)
        _at_least(f"{name}.epochs", self.epochs, 1)
        if self.train_samples is not None:
            _at_least(f"{name}.train_samples", self.train_samples, 1)
        _positive(f"{name}.audio_lr_scale", self.audio_lr_scale)
        ok = isinstance(self.seed, int) and self.seed >= 0
        _require(ok, f"{name}.seed", "be a non-negative integer", self.seed, "an integer >= 0")
        if self.workers is not None:
            ok = isinstance(self.workers, int) and not isinstance(self.workers, bool) and self.workers >= 0
            _require(
                ok,
                f"{name}.workers",
                "be a non-negative integer or None (one per core)",
                self.workers,
                "an integer >= 0",
            )

    def data_workers(self, processes: int = 1) -> int:
        """DataLoader worker processes of one training process: ``workers``, or when it is None the cores shared
        by the ``processes`` training processes of this machine (at least one each)."""
        if self.workers is not None:
            return self.workers
        return max(1, (os.cpu_count() or 1) // max(1, processes))


@dataclass(frozen=True)
class Preset:
    name: str
    video: VideoSpec = field(default_factory=VideoSpec)
    audio: AudioSpec = field(default_factory=AudioSpec)
    cache: CacheSpec = field(default_factory=CacheSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    sinkhorn: SinkhornSpec = field(default_factory=SinkhornSpec)
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    optim: OptimSpec = field(default_factory=OptimSpec)
    refine: RefineSpec = field(default_factory=RefineSpec)
    contrast: ContrastSpec = field(default_factory=ContrastSpec)
    cpu_bf16: bool = True  # bf16 autocast + channels_last_3d on CPUs that have AVX512-BF16
    eval_batch_size: int = 64

    def validate(self) -> Preset:
        """Refuse settings that cannot run (``ConfigError`` naming the field); the preset itself when all is well.

        Training and assignment call it once, before they start."""
        for part in ("video", "audio", "cache", "model", "sinkhorn", "schedule", "optim", "refine", "contrast"):
            getattr(self, part).validate(part)
        _at_least("eval_batch_size", self.eval_batch_size, 1)
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_overrides(self, **sections: dict[str, Any]) -> Preset:
        """A copy with fields of named sections replaced, e.g. ``model={"heads": 2}``."""
        out = self
        for section, values in sections.items():
            if not values:
                continue
            out = replace(out, **{section: replace(getattr(out, section), **values)})
        return out

    def with_epochs(self, epochs: int | None) -> Preset:
        """A copy that trains exactly ``epochs`` epochs on any data set (no ``train_samples`` stretch); None: as is."""
        return self if epochs is None else self.with_overrides(optim={"epochs": epochs, "train_samples": None})

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Preset:
        def tup(x: Any) -> Any:
            return tuple(x) if isinstance(x, list) else x

        parts = {
            "video": VideoSpec,
            "audio": AudioSpec,
            "cache": CacheSpec,
            "model": ModelSpec,
            "sinkhorn": SinkhornSpec,
            "schedule": ScheduleSpec,
            "optim": OptimSpec,
            "refine": RefineSpec,
            "contrast": ContrastSpec,
        }
        kwargs: dict[str, Any] = {}
        for key, value in d.items():
            if key in parts:
                retired = RETIRED_FIELDS.get(key, ())
                kwargs[key] = parts[key](**{k: tup(v) for k, v in value.items() if k not in retired})
            else:
                kwargs[key] = value
        return Preset(**kwargs)


#: Fields that presets saved by earlier versions may hold and that no longer exist (dropped when read back).
RETIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "schedule": ("align_proposals", "align_patience", "align_restarts"),  # the swap search, now an exact LSA
}


def planned_epochs(optim: OptimSpec, clips: int) -> int:
    """Epochs to train on ``clips`` clips: ``optim.epochs``, or more on small sets when ``train_samples`` is set."""
    if optim.train_samples is None or clips <= 0:
        return optim.epochs
    return max(optim.epochs, int(round(optim.train_samples / clips)))


# Windows are decoded from the original files in DataLoader workers (one per core): no whole-set cache.
PAPER = Preset(name="paper", cache=CacheSpec(enabled=False))

EPOCHS_CPU_SMALL = 54  # with the heads refined after it, under 20 min on 2 cores for 3,000 clips

CPU_SMALL = Preset(
    name="cpu-small",
    # The whole 2 s clip in both modalities (a word can sit anywhere in it); strong colour, geometric and
    # spectrogram jitter keep a clip's exact look and sound from being a fingerprint to memorise.
    video=VideoSpec(
        num_frames=2,
        seconds=2.0,
        crop=40,
        train_short_side=(42, 52),
        colour_augment=True,
        standardise=True,  # random-init features then carry the shape at once, and the first labellings follow it
        max_rotate_deg=15.0,
        max_shear=0.15,
    ),
    audio=AudioSpec(
        sample_rate=16_000,
        seconds=2.0,
        n_mels=40,
        n_fft=512,
        spec_augment=True,
        max_time_stretch=0.15,
        max_freq_warp=0.08,
        time_roll=True,  # without it the word's onset becomes the audio's clusters
        exact=False,
    ),
    cache=CacheSpec(fps=8.0, short_side=48, max_seconds=10.0),
    # R(2+1)D with one block per stage (per second of CPU it learns faster than the 18-layer trunk), ResNet-9
    model=ModelSpec(video_widths=(24, 48, 96, 192), video_layers=(1, 1, 1, 1), audio_widths=(16, 32, 64, 128)),
    # Relabel once an epoch from the training steps' posteriors (more epochs in the same time); the audio's share
    # starts low to keep the speaker out of the labels and rises once the audio has learned the shared factor.
    schedule=ScheduleSpec(
        n_opts=EPOCHS_CPU_SMALL + 1,
        power=1.0,
        bn_warmup_batches=5,
        equalise_confidence=True,
        audio_weight=0.2,
        audio_weight_final=0.8,
        posteriors_from="training",
        memory_momentum=0.5,  # steadier labels from one labelling to the next, and a faster climb
    ),
    optim=OptimSpec(
        optimizer="adam",
        lr=1e-3,
        weight_decay=1e-5,
        warmup_epochs=0,
        batch_size=64,
        epochs=EPOCHS_CPU_SMALL,
        train_samples=EPOCHS_CPU_SMALL * 3_000,  # the steps of 54 epochs of AV digits, for smaller sets too
        audio_lr_scale=1.0,
        # Batches in the training process, from the uint8 cache: the recipe is calibrated on this generator's
        # order of draws, and on two cores worker processes would take their CPU from the model.
        workers=0,
    ),
    # Sizes lean towards equal without being forced (semi-relaxed): on the frozen features of one 90-epoch run each
    # (seed 1) of zipf, fallback-zipf and balanced-fallback the mean of heads gained 0.07-0.13 NMI; on balanced sets
    # a wash over seeds (-0.03 to +0.08), where clusters can empty and one grow; not yet measured end to end at this
    # preset's length (docs/experiments.md, "Change 4"). --refine-marginal-strength 1 holds sizes exactly.
    refine=RefineSpec(rounds=24, target="uniform", marginal_strength=0.5),
    contrast=ContrastSpec(weight=1.0),  # picture-to-sound matching: labels follow the shared factor from the start
    cpu_bf16=False,  # at these widths channels-last fp32 is as fast, and bf16 gradients overflowed
    eval_batch_size=128,
)

PRESETS: dict[str, Preset] = {p.name: p for p in (PAPER, CPU_SMALL)}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


@dataclass(frozen=True)
class PreviewSpec:
    """Browser previews: H.264 + AAC MP4 (yuv420p, constant frame rate, +faststart) and a poster JPEG."""

    fps: int = 30
    short_side: int = 240
    crf: int = 23
    audio_rate: int = 44_100
    audio_bitrate: int = 96_000
    poster_quality: int = 85


PREVIEW = PreviewSpec()


@dataclass(frozen=True)
class CatalogSpec:
    """The catalog folder's bookkeeping at scale: the probe journal and the clean-up of killed writes.

    Not part of ``PreviewSpec`` on purpose: that one keys the preview files, and these numbers do not
    change what a preview looks like.
    """

    # ``selavi ingest`` appends each probe to a journal and hands it to the OS every this many files or
    # seconds, whichever comes first: a killed ingest loses at most that much probing.
    probe_journal_flush_files: int = 500
    probe_journal_flush_s: float = 1.0
    # A temporary of an atomic write (``.NAME.<pid>.<rand>.tmp.SUFFIX``, or the older ``.part``) that nothing
    # has written to for this long is an orphan of a killed process and is removed...
    orphan_temp_age_s: float = 3600.0
    # ... and sooner, after this long, when its writer's pid is not alive on this machine (the wait spares a
    # writer on another machine sharing the folder, whose pid means nothing here and whose file is still growing).
    orphan_temp_dead_pid_age_s: float = 60.0


CATALOG = CatalogSpec()


@dataclass(frozen=True)
class StudioSpec:
    """The Studio's browsing and map parameters (sizes a browser and two CPU cores handle comfortably)."""

    page_size: int = 24  # poster frames per grid page
    grid_columns: int = 6
    map_max_points: int = 100_000  # above this the map is a stratified sample of the clips
    map_neighbours: int = 15  # UMAP n_neighbors, from a faiss k-NN graph
    map_pca_dims: int = 64  # features are PCA-reduced before the exact k-NN graph (fast and denoised)
    map_pca_train: int = 20_000  # clips the PCA is fitted on
    map_min_dist: float = 0.1
    map_seed: int = 0
    similar_k: int = 12
    montage_grid: tuple[int, int] = (3, 3)  # columns, rows of member clips playing at once
    montage_seconds: float = 4.0
    montage_cell: tuple[int, int] = (192, 144)  # width, height of one cell in pixels
    montage_fps: int = 15
    montage_x264_preset: str = "veryfast"  # libx264 speed preset of the montage encode
    montage_threads: int = 2  # encoder threads
    montage_fill_grey: int = 20  # grey level (0-255) of empty cells when a cluster has fewer playable members
    montage_candidates_per_cell: int = 4  # most confident members looked at per cell for a playable preview
    build_workers: int = 2  # previews and posters built on demand at once, in the background (the page's clips)
    build_poll_s: float = 1.5  # how often a page waiting for them looks again


STUDIO = StudioSpec()


@dataclass(frozen=True)
class LabelsSpec:
    """The label store and exports (selavi_core/labels)."""

    store_file: str = "labels.sqlite"  # default SQLite file inside the run folder
    # A writer waits this long for another writer's lock (SQLite's busy timeout, PostgreSQL's lock_timeout on the
    # writers' advisory lock), then gives up with StoreBusyError ("another annotator is saving, try again").
    # Readers never wait for a writer.
    write_lock_wait_s: float = 5.0
    sqlite_synchronous: str = "FULL"  # fsync the WAL on every commit: an acknowledged edit survives power loss
    max_name_length: int = 200  # cluster names, labels, annotator and snapshot names
    split_k: int = 2  # default number of sub-clusters a k-means split proposes
    split_n_init: int = 4  # k-means restarts
    split_iters: int = 25  # k-means iterations per restart
    split_seed: int = 0
    # A cluster name is carried to a new assignment (retrain, re-assign) only when at least this share of its
    # clips are in one new cluster, and they are at least carry_min_share of that cluster (labels/carry.py).
    carry_min_overlap: float = 0.5
    carry_min_share: float = 0.5


LABELS = LabelsSpec()


@dataclass(frozen=True)
class AuthSpec:
    """Sign-in to the Studio (selavi_core/auth.py): password hashing and failed-attempt throttling."""

    scrypt_n: int = 2**14  # scrypt cost (CPU and memory: 128 * n * r bytes, 16 MiB here), ~50 ms a check
    scrypt_r: int = 8
    scrypt_p: int = 1
    salt_bytes: int = 16  # random salt per password
    key_bytes: int = 32  # derived key length
    min_password_length: int = 8
    max_failures: int = 5  # failed sign-ins for one name within failure_window_s before it is locked
    failure_window_s: float = 300.0  # and the lock lasts until the oldest of them is this old


AUTH = AuthSpec()


@dataclass(frozen=True)
class DiagnosticsSpec:
    """When a training log reads as a failed run (selavi_core/training/diagnostics.py). No rule uses ground truth.

    Every rule judges the end of training: the median over the last ``window`` labellings (or epochs), so one
    noisy value neither raises nor hides a warning, and a run with fewer than ``min_points`` of them is not
    judged at all. Thresholds that depend on K are stated relative to chance (1/K) or to the prior's target.
    """

    window: int = 5
    min_points: int = 3
    # Consecutive labellings that agree less than this (NMI) mean the networks keep chasing new labels.
    min_stability_nmi: float = 0.5
    # A modality "predicts the labels" when its argmax matches them for more than
    # min(agree_chance_multiple / K, 1/K + agree_min_margin * (1 - 1/K)) of the clips (0.19 at K=10, where the
    # audio of a working run leaves ~0.2 as it starts to learn; the second term keeps K=2 or 3 meaningful).
    agree_chance_multiple: float = 2.0
    agree_min_margin: float = 0.1
    # One cluster swallows the data when it holds more than its target share plus this fraction of the rest
    # (0.55 of the clips at K=10 with a uniform prior, 0.75 at K=2).
    swallow_fraction: float = 0.5
    # Sinkhorn spreads the labels over every cluster; fewer than this share of K in use means a collapse
    # (or K far too large for the data set).
    min_used_fraction: float = 0.5
    # The loss of the last epochs must end at least this fraction below both the first epoch's and log K (the
    # cross-entropy of a uniform guess; the correspondence loss is left out): failed runs end near log K.
    min_loss_drop: float = 0.1


DIAGNOSTICS = DiagnosticsSpec()


@dataclass(frozen=True)
class RawBaselineSpec:
    """Raw-input features that `selavi evaluate`'s no-learning k-means baselines cluster (selavi_core/raw_features)."""

    frames: int = 4  # grey frames per clip, evenly spread over the clip
    side: int = 16  # each frame area-downsampled to side x side pixels


RAW_BASELINE = RawBaselineSpec()


def default_workers() -> int:
    """Parallel workers for I/O-bound media work: the cores we have, at least two."""
    return max(2, os.cpu_count() or 2)
