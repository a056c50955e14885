"""Refine the clustering heads on frozen features: SeLaVi's self-labelling loop, heads only.

Training ends with encoders that cluster better than their heads: the heads are fitted to labels drawn
from augmented, train-mode posteriors that changed at every labelling, and a short CPU schedule stops
while they still trail (see ``config.RefineSpec``). This loop takes the un-augmented features of every
clip, as assignment sees them, and alternates the two steps of training with the encoders fixed:
Sinkhorn-Knopp labels from the heads' eval-mode posteriors under each head's prior, then a few epochs of
both modalities' heads on those labels. Features are computed once, so a round costs milliseconds of MLP
and one Sinkhorn solve per head.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np
import torch

from selavi_core.config import RefineSpec, SinkhornSpec
from selavi_core.errors import SelaviError
from selavi_core.evaluation.metrics import nmi
from selavi_core.model.inference import head_log_posteriors, joint_log_posterior
from selavi_core.model.networks import SeLaViModel, self_label_loss
from selavi_core.selflabel.priors import column_mass
from selavi_core.selflabel.sinkhorn import SinkhornResult, sinkhorn_knopp
from selavi_core.training.constraints import ConstrainedResult, FixedRows, constrained_sinkhorn
from selavi_core.training.diagnostics import largest_share


def label_heads(
    model: SeLaViModel,
    fv: np.ndarray,
    fa: np.ndarray,
    marginal: Callable[[int, np.ndarray], np.ndarray],
    audio_weight: float,
    sinkhorn: SinkhornSpec,
    device: torch.device,
    fixed: FixedRows | None = None,
    marginal_strength: float = 1.0,
) -> tuple[np.ndarray, list[int]]:
    """Sinkhorn labels (N, H) of every head from its eval posteriors, and the iterations each took.

    ``marginal(h, mass)`` gives head h's target cluster distribution from its current column mass, so the
    caller's prior (rank-matched draws included) applies exactly as in training. ``fixed`` pins rows to
    clusters in every head (human labels, ``selavi_core.training.constraints``); the rest share what the pins leave.
    ``marginal_strength`` < 1 lets the sizes lean towards the marginal instead of matching it (``sinkhorn_knopp``).
    """
    labels = np.empty((len(fv), model.heads), np.int64)
    iters = []
    for h in range(model.heads):
        lv, la = head_log_posteriors(model, fv, fa, h, device)
        log_p = joint_log_posterior(lv, la, audio_weight)
        mass = column_mass(log_p, power=1.0 if la is None else 2.0)
        kw = {**sinkhorn.solver_kwargs(), "marginal_strength": marginal_strength}
        res: ConstrainedResult | SinkhornResult
        if fixed is not None:
            res = constrained_sinkhorn(log_p, marginal(h, mass), fixed, **kw)
        else:
            res = sinkhorn_knopp(log_p, marginal(h, mass), **kw)
        labels[:, h] = res.labels
        iters.append(int(res.n_iter))
    return labels, iters


def fit_heads(
    model: SeLaViModel,
    fv: torch.Tensor,
    fa: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    batch_size: int,
    rng: np.random.Generator,
) -> float:
    """Train the heads on (features, labels) with training's loss (``models.self_label_loss``)."""
    model.train()
    losses = []
    for _ in range(epochs):
        order = torch.from_numpy(rng.permutation(len(fv))).to(fv.device)
        for start in range(0, len(fv), batch_size):
            rows = order[start : start + batch_size]
            if len(rows) < 2:  # BatchNorm needs two rows
                continue
            loss = self_label_loss(*model.heads_logits(fv[rows], fa[rows]), labels[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    return float(np.mean(losses)) if losses else float("nan")


def refine_heads(
    model: SeLaViModel,
    fv: np.ndarray,
    fa: np.ndarray,
    *,
    spec: RefineSpec,
    sinkhorn: SinkhornSpec,
    marginal: Callable[[int, np.ndarray], np.ndarray],
    device: torch.device,
    seed: int,
    weight_decay: float = 0.0,
    truth: np.ndarray | None = None,
    log: Callable[[str], None] = print,
    fixed: FixedRows | None = None,
) -> list[dict]:
    """Run ``spec.rounds`` rounds of label-then-fit on the heads of ``model`` (in place); one record a round.

    ``fv``/``fa`` are the pooled features of every clip (float32, eval mode). ``truth`` (codes, -1 for
    unknown) adds the NMI of the labels to each record. ``fixed`` pins rows to clusters in every labelling
    (``label_heads``). Encoders are not touched. ``spec`` is taken as validated (``Preset.validate``).
    """
    if len(fv) < 2:
        raise SelaviError(f"refining the heads needs at least 2 clips, got {len(fv)}")
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.Adam(list(model.head_parameters()), lr=spec.lr, weight_decay=weight_decay)
    tv = torch.from_numpy(np.ascontiguousarray(fv, np.float32)).to(device)
    ta = torch.from_numpy(np.ascontiguousarray(fa, np.float32)).to(device)
    known = None if truth is None else truth != -1
    history: list[dict] = []
    previous = None
    for r in range(spec.rounds):
        t0 = time.time()
        labels, iters = label_heads(
            model, fv, fa, marginal, spec.audio_weight, sinkhorn, device, fixed, spec.marginal_strength
        )
        loss = fit_heads(
            model, tv, ta, torch.from_numpy(labels).to(device), optimizer, spec.epochs, spec.batch_size, rng
        )
        record = {
            "refine_round": r + 1,
            "seconds": round(time.time() - t0, 2),
            "sk_iters_mean": float(np.mean(iters)),
            "loss": round(loss, 4),
            # higher than 1/K where the size pull is weaker (``marginal_strength``)
            "largest_share": largest_share(labels),
        }
        if fixed is not None:
            record["fixed_rows"] = fixed.n_fixed
        if previous is not None:
            record["stability_nmi"] = round(float(nmi(previous[:, 0], labels[:, 0])), 4)
        if truth is not None and known is not None and known.any():
            scores = [float(nmi(truth[known], labels[known, h])) for h in range(model.heads)]
            record["nmi_gt_head0"], record["nmi_gt_best"] = round(scores[0], 4), round(max(scores), 4)
        previous = labels
        history.append(record)
        log("refine " + json.dumps(record))
    model.eval()
    return history
