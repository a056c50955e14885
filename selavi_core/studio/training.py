"""The Overview's training section: a run's training curves, the warnings judged from them, and the lines
the plots draw (a random guess's loss, the agreement a modality needs, the prior's largest share and where
a cluster swallows the data). The rules themselves live in ``selavi_core.training.diagnostics``; this is
the one place the Studio reaches them, so the pages import nothing from the training stage.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from selavi_core.training.diagnostics import (
    RunWarning,
    TrainingCurves,
    agreement_threshold,
    assess_training,
    load_run_training,
    swallow_threshold,
    target_largest_share,
)


@dataclass(frozen=True)
class TrainingView:
    curves: TrainingCurves
    warnings: list[RunWarning]  # judged from the end of training, without ground truth
    random_loss: float | None  # log K: the self-labelling loss of a random guess (None when K <= 1 or unknown)
    agreement_line: float | None  # the share of clips a modality must label like the labels (None: K unknown)
    largest_target: float | None  # the prior's largest share (None when unknown and K unknown)
    swallow_line: float | None  # the largest cluster's share above which it swallows the data


def training_view(run_dir: str | os.PathLike) -> TrainingView | None:
    """What the Overview shows of a run's training, or None when the run folder has no training log."""
    curves = load_run_training(run_dir)
    if curves is None:
        return None
    k = curves.k
    target = target_largest_share(k, curves.prior_largest_share)
    return TrainingView(
        curves=curves,
        warnings=assess_training(curves),
        random_loss=math.log(k) if k and k > 1 else None,
        agreement_line=agreement_threshold(k) if k else None,
        largest_target=target or None,
        swallow_line=swallow_threshold(target) if target else None,
    )
