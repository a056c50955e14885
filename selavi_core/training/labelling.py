"""Pseudo-labels of every clip during training: Sinkhorn-Knopp over the whole data set (SeLaVi's self-labelling).

At each labelling the heads are shuffled into groups (decorrelated heads); each group gets its own augmented
eval-mode pass over the data set (or, with ``ScheduleSpec.posteriors_from="training"``, the posteriors the
training steps kept), each head its own prior draw rank-matched to the current cluster masses, and one
Sinkhorn solve. At the first labelling each audio head's outputs are permuted to match its video head (L1).
Under torchrun rows are sharded across ranks (``selavi_core.training.distributed``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np
import torch

from selavi_core.config import Preset, ScheduleSpec
from selavi_core.evaluation.metrics import nmi
from selavi_core.model.device import Precision
from selavi_core.model.inference import (
    equalise_confidence,
    extract_features,
    head_log_posteriors,
    joint_log_posterior,
    margin_sum,
)
from selavi_core.model.networks import SeLaViModel
from selavi_core.selflabel.alignment import align_permutation, apply_permutation_to_linear
from selavi_core.selflabel.priors import PriorSpec, column_mass
from selavi_core.selflabel.sinkhorn import SinkhornResult, sinkhorn_knopp, sinkhorn_knopp_distributed
from selavi_core.training import distributed
from selavi_core.training.constraints import ConstrainedResult, FixedRows, constrained_sinkhorn
from selavi_core.training.diagnostics import largest_share
from selavi_core.training.distributed import Context
from selavi_core.training.loader import Loader
from selavi_core.training.state import TrainState


def audio_weight(schedule: ScheduleSpec, iteration: int, total_iters: int) -> float:
    """The audio's share in the labels at ``iteration``: constant, or on its linear ramp over ``total_iters``."""
    if schedule.audio_weight_final is None:
        return schedule.audio_weight
    done = min(1.0, iteration / max(1, total_iters))
    return schedule.audio_weight + (schedule.audio_weight_final - schedule.audio_weight) * done


class Labeller:
    """Computes the (N, H) pseudo-labels of ``rows`` into a ``TrainState``; keeps the training steps' posteriors
    when the preset labels from them (``memory``: (H, N, K) log-posteriors for video and audio)."""

    def __init__(
        self,
        model: SeLaViModel,
        loader: Loader,
        rows: np.ndarray,
        preset: Preset,
        *,
        ctx: Context,
        precision: Precision,
        prior: PriorSpec,
        clusters: int,
        fixed: FixedRows | None = None,
        truth: np.ndarray | None = None,
        log: Callable[[str], None] = print,
    ):
        self.model, self.loader, self.rows, self.preset = model, loader, rows, preset
        self.ctx, self.precision, self.prior, self.clusters = ctx, precision, prior, clusters
        self.fixed, self.truth, self.log = fixed, truth, log
        # Posteriors of each clip from its last training step (posteriors_from="training"): (H, N, K)
        # for video and audio, filled by the first labelling's pass and then by every training batch.
        self.memory: tuple[np.ndarray, np.ndarray | None] | None = None

    def ensure_prior_bases(self, st: TrainState, shared_rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw each head's prior base once per run (and start from uniform marginals).

        Returns ``(st.prior_bases, st.marginals)``, the (H, K) arrays themselves (writes into them are the state's).
        """
        if st.prior_bases is None:
            heads = self.model.heads
            st.prior_bases = np.asarray(self.prior.draw(self.clusters, heads, shared_rng), dtype=np.float64)
            st.marginals = np.tile(np.full(self.clusters, 1.0 / self.clusters), (heads, 1))
        if st.marginals is None:
            raise ValueError("the training state has prior bases but no marginals")
        return st.prior_bases, st.marginals

    def _align(self, fv: np.ndarray, fa: np.ndarray) -> None:
        """Permute each audio head's outputs to match its video head, once (first labelling)."""
        s, ctx = self.preset.schedule, self.ctx
        for h in range(self.model.heads):
            lv, la = head_log_posteriors(self.model, fv, fa, h, ctx.device)
            if la is None:
                raise ValueError("modality alignment needs separate audio heads (fusion='augment')")
            lv = distributed.gather_sample(ctx, lv, s.align_max_rows)
            la = distributed.gather_sample(ctx, la, s.align_max_rows)
            perm = None
            if ctx.main:
                perm, _ = align_permutation(np.exp(lv), np.exp(la))
            perm = distributed.broadcast_permutation(ctx, perm, self.clusters)
            apply_permutation_to_linear(self.model.audio_head_last_linear(h), perm)

    def relabel(
        self, st: TrainState, *, rng: np.random.Generator, shared_rng: np.random.Generator, w_audio: float
    ) -> None:
        """One Sinkhorn-Knopp labelling of every head, with decorrelated groups of heads, into ``st``.

        ``rng`` draws this rank's augmentations, ``shared_rng`` (identical on every rank) the head groups,
        prior bases and alignment; ``w_audio`` is the audio's share in the labels."""
        s, sk, ctx = self.preset.schedule, self.preset.sinkhorn, self.ctx
        t0 = time.time()
        heads = self.model.heads
        n_total = len(self.rows)
        block = distributed.local_block(ctx, n_total)
        local_rows = self.rows[block]
        prior_bases, marginals = self.ensure_prior_bases(st, shared_rng)
        order = shared_rng.permutation(heads)
        groups = [order[g :: s.groups] for g in range(min(s.groups, heads))]
        labels = np.zeros((n_total, heads), np.int64)
        stats, agree = [], np.zeros(2, np.int64)
        memory = self.memory
        from_memory = memory is not None
        keep = s.posteriors_from == "training" and not ctx.distributed
        if keep and memory is None:
            k = self.clusters
            memory = self.memory = (
                np.zeros((heads, n_total, k), np.float32),
                np.zeros((heads, n_total, k), np.float32) if self.model.fusion == "augment" else None,
            )
        for g, group in enumerate(groups):
            if not from_memory:
                fv, fa = extract_features(
                    self.model,
                    self.loader,
                    local_rows,
                    precision=self.precision,
                    batch_size=self.preset.eval_batch_size,
                    train_aug=True,
                    rng=rng,
                    desc=f"labelling pass {g + 1}/{len(groups)}",
                )
                if not st.aligned and s.align and self.model.fusion == "augment":
                    self._align(fv, fa)
            for h in group:
                if from_memory and memory is not None:
                    mem_v, mem_a = memory
                    lv, la = mem_v[h], None if mem_a is None else mem_a[h]
                else:
                    lv, la = head_log_posteriors(self.model, fv, fa, int(h), ctx.device)
                    if keep and memory is not None:
                        mem_v, mem_a = memory
                        mem_v[h] = lv
                        if la is not None and mem_a is not None:
                            mem_a[h] = la
                if s.equalise_confidence and la is not None:
                    margins = distributed.allreduce(ctx, np.array([margin_sum(lv), margin_sum(la)])) / n_total
                    lv_t, la_t = equalise_confidence(lv, la, *margins)
                    log_p = joint_log_posterior(lv_t, la_t, w_audio)
                else:
                    log_p = joint_log_posterior(lv, la, w_audio)
                # log_p is a weighted mean of two log posteriors: doubling it gives p_v p_a at audio_weight 0.5
                mass = distributed.allreduce(ctx, column_mass(log_p, power=1.0 if la is None else 2.0))
                marginal = np.asarray(self.prior.marginal(prior_bases[h], mass), np.float64)
                marginal = distributed.broadcast_array(ctx, marginal)
                marginals[h] = marginal
                solver = sinkhorn_knopp_distributed if ctx.distributed else sinkhorn_knopp
                res: ConstrainedResult | SinkhornResult
                if self.fixed is not None:  # pinned rows keep their cluster; the rest share what they leave
                    fixed = self.fixed.shard(block)
                    res = constrained_sinkhorn(log_p, marginal, fixed, solver=solver, **sk.solver_kwargs())
                else:
                    res = solver(log_p, marginal, **sk.solver_kwargs())
                labels[block, h] = res.labels
                stats.append(int(res.n_iter))
                if la is not None:  # does each modality predict the labels? (one dominating is a trap)
                    agree += [np.sum(lv.argmax(1) == res.labels), np.sum(la.argmax(1) == res.labels)]
        st.aligned = True
        labels = distributed.allreduce(ctx, labels)
        previous = st.labels
        st.labels = labels
        st.n_labellings += 1
        record = {
            "labelling": st.n_labellings,
            "iteration": st.iteration,
            "epoch": st.epoch,
            "seconds": round(time.time() - t0, 2),
            "sk_iters_mean": float(np.mean(stats)),
            "clusters_used_head0": int(len(np.unique(labels[:, 0]))),
            "largest_share": largest_share(labels),
            "audio_weight": round(w_audio, 4),
        }
        if self.fixed is not None:
            record["fixed_rows"] = self.fixed.n_fixed
        if self.model.fusion == "augment":
            agreement = distributed.allreduce(ctx, agree) / (n_total * heads)
            record["agree_video"], record["agree_audio"] = (round(float(x), 4) for x in agreement)
        if previous is not None:
            record["stability_nmi"] = round(float(nmi(previous[:, 0], labels[:, 0])), 4)
        if self.truth is not None:
            known = self.truth != -1
            record["nmi_gt_head0"] = round(float(nmi(self.truth[known], labels[known, 0])), 4)
            record["nmi_gt_best"] = round(max(float(nmi(self.truth[known], labels[known, h])) for h in range(heads)), 4)
        st.history.append(record)
        self.log("labelling " + json.dumps(record))

    def remember(self, rows_pos: np.ndarray, out_a: list[torch.Tensor], out_b: list[torch.Tensor] | None) -> None:
        """Keep a training batch's posteriors for the next labelling (posteriors_from="training")."""
        if self.memory is None:
            return
        with torch.no_grad():
            for mem, outs in zip(self.memory, (out_a, out_b), strict=True):
                if mem is not None and outs is not None:  # both None exactly for concat fusion
                    logp = torch.log_softmax(torch.stack([o.detach().float() for o in outs]), dim=2)
                    new = logp.cpu().numpy()
                    m = self.preset.schedule.memory_momentum
                    if m > 0:  # running mean of the probabilities, in log space
                        new = np.logaddexp(np.log(m) + mem[:, rows_pos], np.log1p(-m) + new)
                    mem[:, rows_pos] = new
