"""Training diagnostics a user can read without ground truth: the curves of ``train_log.jsonl`` and warnings.

``selavi train`` appends one JSON object per line to ``RUN_DIR/train_log.jsonl`` (selavi_core/training/trainer.py):
``{"type": "epoch", ...}`` after every epoch, carrying the last labelling made before the epoch ended
(``labelling_log``), then ``{"type": "refine", ...}`` for each round of refining the heads. This module turns
that log into tidy frames (one row per epoch, per labelling, per refine round) and judges whether the run
looks failed. A user with unlabelled data cannot ask "is the NMI high?", so every rule reads only what
self-labelling itself exposes:

* **labels never stabilise**: consecutive labellings of head 0 stay far apart (NMI between them), so the
  network keeps chasing new targets instead of refining one clustering;
* **a modality ignores the labels**: the video (or audio) head's own argmax rarely equals the label, so the
  labels are the other modality's alone (the trap SeLaVi's "modality as augmentation" must avoid), or,
  when both are low, the labels are noise neither network learns;
* **a cluster swallows the data** or **clusters go unused**: the label marginal collapsed;
* **the loss does not fall**: the self-labelling cross-entropy ends near log K (a uniform guess) or above its
  first epoch, so the networks learn nothing from their labels. This was the rule that caught real failed runs
  (silent audio, a learning rate far too high) whose labels looked settled and whose modalities agreed.

Ground-truth NMI, where the log has it, is kept in the frames for the plots but never used by a rule.
Older logs lack some fields (``largest_share``, the agreements): a rule whose field is missing is skipped.
"""

from __future__ import annotations

import json
import math
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from selavi_core.config import DIAGNOSTICS, DiagnosticsSpec
from selavi_core.errors import RunError

LOG_NAME = "train_log.jsonl"  # the name selavi_core.training.trainer writes (not imported: train pulls in torch)

EPOCH_COLUMNS = (
    "epoch",
    "loss",
    "label_loss",
    "contrast_loss",
    "seconds",
    "labellings",
    "stability_nmi",
    "nmi_gt_head0",
    "nmi_gt_best",
)
LABELLING_COLUMNS = (
    "labelling",
    "iteration",
    "epoch",
    "seconds",
    "sk_iters_mean",
    "clusters_used_head0",
    "largest_share",
    "audio_weight",
    "agree_video",
    "agree_audio",
    "stability_nmi",
    "nmi_gt_head0",
    "nmi_gt_best",
)
REFINE_COLUMNS = (
    "after_epoch",
    "refine_round",
    "seconds",
    "sk_iters_mean",
    "loss",
    "largest_share",
    "stability_nmi",
    "nmi_gt_head0",
    "nmi_gt_best",
)
GROUND_TRUTH_COLUMNS = ("nmi_gt_head0", "nmi_gt_best")


@dataclass(frozen=True)
class TrainingCurves:
    """A training log as tidy frames, plus what the run folder says about K and the prior.

    ``epochs``: one row per epoch (the last line wins if a resume wrote an epoch twice); ``loss`` is what training
    minimised, ``contrast_loss`` its cross-modal correspondence part (when ``ContrastSpec.weight`` > 0) and
    ``label_loss`` the self-labelling cross-entropy alone (logged by training; for older logs derived as
    ``loss - weight * contrast_loss``, absent when the weight is unknown). ``labellings``: one row
    per labelling the log recorded, by labelling number; the log keeps only the last labelling of each epoch,
    so with several labellings an epoch some are missing, and with fewer (the paper's schedule) none is
    repeated. ``refine``: one row per refine round, ``after_epoch`` saying which epoch it followed (a resumed
    run is refined again at its new end). Columns the log never had are absent; values a line lacked are NaN.
    """

    epochs: pd.DataFrame
    labellings: pd.DataFrame
    refine: pd.DataFrame
    path: Path
    clusters: int | None = None  # K, from the run folder; None when only the log was read
    prior_largest_share: float | None = None  # the prior's largest target share (mean over heads), if known
    contrast_weight: float | None = None  # ContrastSpec.weight of the run, from the run folder
    skipped_lines: int = 0  # lines that were not JSON objects (e.g. a line cut off by a killed process)

    @property
    def has_ground_truth(self) -> bool:
        return any(c in f and f[c].notna().any() for f in (self.epochs, self.labellings) for c in GROUND_TRUTH_COLUMNS)

    @property
    def n_labellings(self) -> int:
        """Labellings made in training (the epoch lines count them; the labelling rows may miss some)."""
        if "labellings" in self.epochs and self.epochs["labellings"].notna().any():
            return int(self.epochs["labellings"].max())
        return len(self.labellings)

    @property
    def final_refine(self) -> pd.DataFrame:
        """The refine rounds after the last epoch (those that shaped the run's assignments)."""
        if self.refine.empty or self.epochs.empty:
            return self.refine
        return self.refine[self.refine["after_epoch"] == self.epochs["epoch"].max()].reset_index(drop=True)

    @property
    def k(self) -> int | None:
        """K: the run's, else the most clusters head 0 ever used (a lower bound), else None."""
        if self.clusters:
            return int(self.clusters)
        if "clusters_used_head0" in self.labellings and self.labellings["clusters_used_head0"].notna().any():
            return int(self.labellings["clusters_used_head0"].max())
        return None


@dataclass(frozen=True)
class RunWarning:
    """One way the run looks failed: a stable ``code``, what looks wrong (``message``) and what to try (``advice``)."""

    code: str
    message: str
    advice: str

    def __str__(self) -> str:
        return f"{self.message} {self.advice}"


def _frame(rows: list[dict], columns: tuple[str, ...], key: str | None = None) -> pd.DataFrame:
    """Rows as a numeric frame with ``columns`` in order (only those some row has); with ``key``, one row per
    key value (the last line wins) sorted by it."""
    present = [c for c in columns if any(c in r for r in rows)]
    df = pd.DataFrame([{c: r.get(c) for c in present} for r in rows], columns=present)
    for c in present:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    if key is not None and key in df and len(df):
        df = df.dropna(subset=[key]).drop_duplicates(subset=[key], keep="last").sort_values(key, kind="stable")
        df[key] = df[key].astype(np.int64)
    return df.reset_index(drop=True)


def read_train_log(
    path: str | os.PathLike,
    *,
    clusters: int | None = None,
    prior_largest_share: float | None = None,
    contrast_weight: float | None = None,
) -> TrainingCurves:
    """Read ``train_log.jsonl`` (or the run folder holding it) into :class:`TrainingCurves`.

    ``clusters``, ``prior_largest_share`` and ``contrast_weight`` are what the log does not record
    (:func:`load_run_training` reads them from the run folder).

    Unreadable lines are skipped and counted, not fatal: the log is appended while training runs, and a
    killed process can leave half a line. A missing file is a :class:`RunError`.
    """
    path = Path(path)
    if path.is_dir():
        path = path / LOG_NAME
    if not path.is_file():
        raise RunError(f"{path} not found: only `selavi train` writes a training log")
    epochs, labellings, refine = [], [], []
    skipped, last_epoch = 0, 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            skipped += 1
            continue
        if not isinstance(rec, dict):
            skipped += 1
            continue
        kind = rec.get("type", "epoch")
        if kind == "epoch" and "epoch" in rec:
            epochs.append(rec)
            last_epoch = rec["epoch"]
            labellings += [r for r in rec.get("labelling_log") or [] if isinstance(r, dict) and "labelling" in r]
        elif kind == "refine" and "refine_round" in rec:
            refine.append({"after_epoch": last_epoch, **rec})
        else:
            skipped += 1
    epoch_df = _frame(epochs, EPOCH_COLUMNS, "epoch")
    if "loss" in epoch_df and not ("label_loss" in epoch_df and epoch_df["label_loss"].notna().all()):
        # logs from before training logged label_loss: derive it
        if "contrast_loss" not in epoch_df:  # no correspondence term: the loss is the self-labelling loss
            epoch_df["label_loss"] = epoch_df["loss"]
        elif contrast_weight is not None:
            epoch_df["label_loss"] = epoch_df["loss"] - contrast_weight * epoch_df["contrast_loss"].fillna(0.0)
    return TrainingCurves(
        epochs=epoch_df,
        labellings=_frame(labellings, LABELLING_COLUMNS, "labelling"),
        refine=_frame(refine, REFINE_COLUMNS),  # rounds restart at 1 after a resume: keep every block
        path=path,
        clusters=clusters,
        prior_largest_share=prior_largest_share,
        contrast_weight=contrast_weight,
        skipped_lines=skipped,
    )


def _json_field(path: Path, *keys: str) -> object:
    """``keys`` looked up in a JSON file; None when the file or a key is missing or unreadable."""
    try:
        value = json.loads(path.read_text())
        for key in keys:
            value = value[key]
        return value
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _run_clusters(run_dir: Path) -> int | None:
    """K as ``run.json`` records it, else as ``preset.json`` set it (None there means "from the data")."""
    for value in (
        _json_field(run_dir / "run.json", "clusters"),
        _json_field(run_dir / "preset.json", "model", "clusters"),
    ):
        if isinstance(value, int | float):
            return int(value)
    return None


def _contrast_weight(run_dir: Path) -> float | None:
    """The run's ContrastSpec.weight from ``preset.json``: 0 for presets from before it existed, None without one."""
    preset = _json_field(run_dir / "preset.json")
    if not isinstance(preset, dict):
        return None
    weight = (preset.get("contrast") or {}).get("weight", 0.0)
    return float(weight) if isinstance(weight, int | float) else None


def load_run_training(run_dir: str | os.PathLike) -> TrainingCurves | None:
    """The training curves of a run folder, with K and the prior from the folder; None when it has no log.

    A run made by ``selavi assign`` alone has no log, which is normal, so this is not an error. K comes from
    ``run.json`` (else ``preset.json``), the prior's largest share from ``priors.npy`` (the target marginals
    of the last labelling), the weight of the correspondence loss from ``preset.json``, each when present.
    """
    run_dir = Path(run_dir)
    if not (run_dir / LOG_NAME).is_file():
        return None
    clusters, prior_share = _run_clusters(run_dir), None
    try:
        priors = np.atleast_2d(np.load(run_dir / "priors.npy"))
        sums = priors.sum(axis=1, keepdims=True)
        if np.all(sums > 0):
            prior_share = float(np.mean((priors / sums).max(axis=1)))
            clusters = clusters or priors.shape[1]
    except (OSError, ValueError):
        pass
    return read_train_log(
        run_dir / LOG_NAME,
        clusters=clusters,
        prior_largest_share=prior_share,
        contrast_weight=_contrast_weight(run_dir),
    )


# ---- rules -------------------------------------------------------------------------------------------
def _tail(df: pd.DataFrame, column: str, spec: DiagnosticsSpec) -> np.ndarray | None:
    """The last ``spec.window`` finite values of a column, or None if the run has too few to judge."""
    if column not in df:
        return None
    values = df[column].to_numpy(dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) < spec.min_points:
        return None
    return values[-spec.window :]


def agreement_threshold(k: int, spec: DiagnosticsSpec = DIAGNOSTICS) -> float:
    """The share of clips a modality must label like the labels to count as predicting them (see the spec)."""
    chance = 1.0 / k
    return min(spec.agree_chance_multiple * chance, chance + spec.agree_min_margin * (1.0 - chance))


def largest_share(labels: np.ndarray) -> float:
    """The largest cluster's share of the clips, averaged over heads, of (N, H) labels: what the log records as
    ``largest_share`` after every labelling and refine round (1/K when sizes are even; near 1 when one cluster
    swallows the data)."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[0] == 0:
        raise ValueError(f"labels must be (N, H) with N > 0, got shape {labels.shape}")
    return round(float(np.mean([np.bincount(labels[:, h]).max() for h in range(labels.shape[1])])) / len(labels), 4)


def target_largest_share(k: int | None, prior_largest_share: float | None) -> float:
    """The share the prior wants in the largest cluster: the prior's own when known, else 1/K (uniform)."""
    if prior_largest_share is not None:
        return float(prior_largest_share)
    return 1.0 / k if k else 0.0


def swallow_threshold(target: float, spec: DiagnosticsSpec = DIAGNOSTICS) -> float:
    """The largest cluster's share above which it swallows the data: its target plus a fraction of the rest."""
    return target + spec.swallow_fraction * (1.0 - target)


def _pct(x: float) -> str:
    return f"{x:.0%}" if x >= 0.1 else f"{x:.1%}"


def _stability(curves: TrainingCurves, spec: DiagnosticsSpec) -> list[RunWarning]:
    source = curves.labellings if "stability_nmi" in curves.labellings else curves.epochs
    tail = _tail(source, "stability_nmi", spec)
    if tail is None or (level := float(np.median(tail))) >= spec.min_stability_nmi:
        return []
    return [
        RunWarning(
            "labels_unstable",
            f"The labels never settled: over the last {len(tail)} labellings, each agreed with the one before only "
            f"at NMI {level:.2f} (below {spec.min_stability_nmi:.2f}), so the networks kept chasing new targets "
            "instead of refining one clustering.",
            "Try a lower learning rate (--lr), more epochs, or fewer clusters (--clusters) if the data set is "
            "small for K.",
        )
    ]


def _agreement(curves: TrainingCurves, spec: DiagnosticsSpec) -> list[RunWarning]:
    k = curves.k
    video, audio = (_tail(curves.labellings, f"agree_{m}", spec) for m in ("video", "audio"))
    if k is None or k < 2 or video is None or audio is None:
        return []
    bar = agreement_threshold(k, spec)
    v, a = float(np.median(video)), float(np.median(audio))
    low = [m for m, x in (("video", v), ("audio", a)) if x < bar]
    facts = f"video alone gives {_pct(v)} of clips their label, audio alone {_pct(a)} (chance is {_pct(1 / k)})"
    if len(low) == 2:
        return [
            RunWarning(
                "labels_not_learned",
                f"Neither modality learned the labels: at the end of training {facts}. The clusters are close "
                "to arbitrary.",
                "Check that the clips decode with sound and pictures (selavi ingest's report), then try more epochs, "
                "a lower learning rate or fewer clusters.",
            )
        ]
    if len(low) == 1:
        weak, strong = low[0], "audio" if low[0] == "video" else "video"
        return [
            RunWarning(
                "modalities_disagree",
                f"The {weak} never learned to predict the labels: at the end of training {facts}. The clusters are "
                f"the {strong}'s alone, not concepts the picture and the sound share.",
                f"Give the {weak} a larger share or learning rate (ScheduleSpec.audio_weight, OptimSpec.audio_lr_scale "
                f"in selavi_core/config.py), train longer, or check that the clips' {weak} carries the content.",
            )
        ]
    return []


def _collapse(curves: TrainingCurves, spec: DiagnosticsSpec) -> list[RunWarning]:
    out = []
    k = curves.k
    share = _tail(curves.labellings, "largest_share", spec)
    if share is not None:
        target = target_largest_share(k, curves.prior_largest_share)
        level = float(np.median(share))
        if level > swallow_threshold(target, spec):
            out.append(
                RunWarning(
                    "cluster_swallows",
                    f"One cluster swallowed the data: at the end of training the largest cluster held {_pct(level)} "
                    f"of the clips (mean over heads), where the prior aims at {_pct(target)}.",
                    "Try a uniform prior (--prior uniform), a lower learning rate, or check for many near-identical "
                    "clips (silent, black or duplicated) in the catalog.",
                )
            )
    used = _tail(curves.labellings, "clusters_used_head0", spec)
    if used is not None and curves.clusters:
        level = float(np.median(used))
        if level < spec.min_used_fraction * curves.clusters:
            out.append(
                RunWarning(
                    "clusters_unused",
                    f"Most clusters stayed empty: at the end of training head 0 used {level:.0f} of its "
                    f"{curves.clusters} clusters.",
                    "Use fewer clusters (--clusters) if the data set is small for K, or a uniform prior "
                    "(--prior uniform).",
                )
            )
    return out


def _loss(curves: TrainingCurves, spec: DiagnosticsSpec) -> list[RunWarning]:
    """The self-labelling loss must end clearly below both its first epoch and log K (a uniform guess).

    Judged on the cross-entropy with the labels alone: the correspondence loss of ``ContrastSpec`` falls
    whether or not the labels mean anything, so a run whose weight is unknown is not judged.
    """
    ep = curves.epochs
    loss = ep["label_loss"].to_numpy(dtype=np.float64) if "label_loss" in ep else np.array([])
    if len(loss) < spec.min_points + 1:
        return []
    first, tail = float(loss[0]), loss[1:][-spec.window :]
    level = float(np.median(tail))
    k = curves.k
    guess = math.log(k) if k and k > 1 else math.inf
    name = "self-labelling loss" if "contrast_loss" in ep else "training loss"
    if not math.isfinite(first) or not np.isfinite(tail).all():
        what = f"The {name} became infinite or NaN."
    elif level > first * (1 + spec.min_loss_drop):
        what = f"The {name} rose: from {first:.2f} in the first epoch to {level:.2f} at the end."
    elif level > min(first, guess) * (1 - spec.min_loss_drop):
        what = f"The {name} hardly fell: from {first:.2f} in the first epoch to {level:.2f} at the end" + (
            f", where a network that guesses at random scores {guess:.2f} (log K)." if math.isfinite(guess) else "."
        )
    else:
        return []
    return [
        RunWarning(
            "loss_not_decreasing",
            f"{what} The networks learned little from their own labels.",
            "Try a lower learning rate (--lr) if it rose; if it stayed flat, more epochs, or check that the clips "
            "differ in what they show and sound like.",
        )
    ]


RULES = (_stability, _agreement, _collapse, _loss)


def assess_training(curves: TrainingCurves, spec: DiagnosticsSpec = DIAGNOSTICS) -> list[RunWarning]:
    """Warnings for a run that looks failed, judged without ground truth; empty for a run that looks healthy."""
    return [w for rule in RULES for w in rule(curves, spec)]


def format_warnings(warnings: list[RunWarning], width: int = 100) -> str:
    """Plain text for a terminal: one paragraph per warning, or one line saying nothing looks wrong."""
    if not warnings:
        return "Training diagnostics: no warnings; nothing in the training log looks like a failed run."
    lines = [f"Training diagnostics: {len(warnings)} warning(s). The run may have failed:"]
    for w in warnings:
        lines.append(textwrap.fill(w.message, width, initial_indent="  - ", subsequent_indent="    "))
        lines.append(textwrap.fill(w.advice, width, initial_indent="    ", subsequent_indent="    "))
    return "\n".join(lines)
