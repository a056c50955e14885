"""SeLaVi training: self-labelling with Sinkhorn-Knopp, modality as augmentation, decorrelated heads.

One loop for one CPU, one GPU or many processes under torchrun (DistributedDataParallel; gloo on
CPU, nccl on GPU). The recipe follows ../shared/docs/selavi-method.md:

* one pseudo-label per clip and head, shared by both modalities; loss = 1/2 mean-over-heads
  CE(video) + 1/2 mean-over-heads CE(audio) ("modality as augmentation"), or one set of heads on
  the concatenated features with ``fusion="concat"``;
* pseudo-labels from Sinkhorn-Knopp at iterations t_j = T (j/(n-1))^p, the first before any
  gradient step, over the whole data set with training augmentations and the model in eval mode;
* heads shuffled into groups at every labelling, one augmented pass per group (decorrelated heads),
  a prior draw per head, rank-matched to the current cluster masses;
* at the first labelling, each audio head's outputs are permuted to match its video head (L1);
* BatchNorm warm-up before the first labelling.

An option beyond the paper, ``ScheduleSpec.posteriors_from="training"``, labels from the posteriors the
training steps already computed (optionally a running mean of them) instead of running extra passes.
``cpu-small`` uses it: on two cores it fits 1.6x the epochs into the same time. Another,
``RefineSpec.rounds``, ends training with rounds of the same self-labelling on the heads alone over
frozen features (``selavi_core.training.refine``).

Distributed pseudo-labelling shards rows across ranks; each rank keeps only its rows' posteriors
and Sinkhorn all-reduces column sums, so no rank ever holds N x K for the whole data set.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist

from selavi_core.catalog import catalog_hash, load_catalog
from selavi_core.config import Preset, planned_epochs
from selavi_core.errors import SelaviError
from selavi_core.evaluation.metrics import nmi
from selavi_core.model.checkpoint import load_checkpoint, save_checkpoint
from selavi_core.model.device import precision_for, resolve_device
from selavi_core.model.inference import (
    equalise_confidence,
    extract_features,
    head_log_posteriors,
    joint_log_posterior,
    margin_sum,
)
from selavi_core.model.networks import build_model, self_label_loss
from selavi_core.progress import progress
from selavi_core.runs.assign import write_assignments
from selavi_core.selflabel.alignment import align_permutation, apply_permutation_to_linear
from selavi_core.selflabel.priors import column_mass, parse_prior
from selavi_core.selflabel.sinkhorn import sinkhorn_knopp, sinkhorn_knopp_distributed
from selavi_core.training.batches import BatchMaker
from selavi_core.training.clip_cache import build_cache
from selavi_core.training.constraints import LabelConstraints, constrained_sinkhorn
from selavi_core.training.contrast import CrossModalProjector, TrainingNet, correspondence_loss
from selavi_core.training.refine import refine_heads

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "train_log.jsonl"


@dataclass
class Context:
    """Where this process runs: device and (optional) process group."""

    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_context(device: str = "auto") -> Context:
    """Join the torchrun process group when launched by torchrun, else run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context(resolve_device(device))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Context(dev, rank, world)


def schedule_points(total_iters: int, n_opts: int, power: float) -> list[int]:
    """Iterations at which pseudo-labels are recomputed: t_j = T (j/(n-1))^p for j < n-1."""
    n = max(2, n_opts)
    return sorted({int(math.floor(total_iters * (j / (n - 1)) ** power)) for j in range(n - 1)})


@dataclass
class TrainState:
    """Everything a resume needs besides model and optimiser weights."""

    epoch: int = 0
    iteration: int = 0
    labels: np.ndarray | None = None  # (N, H) current pseudo-labels
    prior_bases: np.ndarray | None = None  # (H, K) per-head prior draws
    marginals: np.ndarray | None = None  # (H, K) marginals used at the last labelling
    aligned: bool = False
    n_labellings: int = 0
    refined: bool = False  # the heads went through RefineSpec's rounds after the last epoch
    history: list[dict] = field(default_factory=list)


class Trainer:
    def __init__(
        self,
        catalog_dir: str | os.PathLike,
        out_dir: str | os.PathLike,
        preset: Preset,
        *,
        ctx: Context,
        log=print,
        constraints: LabelConstraints | None = None,
    ):
        self.catalog_dir, self.out = Path(catalog_dir), Path(out_dir)
        self.preset, self.ctx, self.log = preset, ctx, log if ctx.main else (lambda *a, **k: None)
        self.prior = parse_prior(preset.schedule.prior, gauss_sd=preset.schedule.gauss_sd)
        self.total_iters: int | None = None  # set by fit(): the audio weight's ramp spans it
        catalog = load_catalog(self.catalog_dir)
        self.catalog_hash = catalog_hash(self.catalog_dir)
        if ctx.main:
            self.cache = build_cache(catalog, self.catalog_dir, self.catalog_hash, preset, log=self.log)
        if ctx.distributed:
            dist.barrier()
        if not ctx.main:
            self.cache = build_cache(catalog, self.catalog_dir, self.catalog_hash, preset, log=self.log)
        self.rows = self.cache.ok_rows
        if len(self.rows) < preset.optim.batch_size * ctx.world:
            raise SelaviError(
                f"only {len(self.rows)} decodable clips; need at least one batch "
                f"({preset.optim.batch_size} per process)"
            )
        ids = self.cache.index["clip_id"].to_numpy()[self.rows]
        by_id = catalog.set_index("clip_id")["label"]
        labels = by_id.reindex(ids)
        self.gt = None if labels.isna().all() else np.asarray(pd.Categorical(labels).codes, dtype=np.int64)
        self.clip_ids = ids
        self.clusters = preset.model.clusters or (int(labels.nunique()) if self.gt is not None else 100)
        # human labels of another run (--labels-from): their rows keep one cluster per label in every labelling
        self.constraints = constraints
        self.fixed = None if constraints is None else constraints.for_rows(ids, self.clusters)
        self.constraints_info = None if constraints is None else constraints.summary(self.fixed)
        if self.constraints_info is not None:
            info = self.constraints_info
            self.log(
                f"labels from {info.get('run_dir', '?')} (head {info.get('head', '?')}): {len(constraints.names)} "
                f"names, {info['fixed_rows']} clips pinned, {info['ignored_clips']} labelled clips not in this training"
            )
        self.maker = BatchMaker(self.cache, preset)
        self.precision = precision_for(ctx.device, preset.cpu_bf16)
        torch.manual_seed(preset.optim.seed + ctx.rank)
        if ctx.device.type == "cpu":
            torch.set_flush_denormal(True)  # denormals in small CPU convolutions cost up to 10x
        self.rng = np.random.default_rng(preset.optim.seed + 1000 * ctx.rank)
        self.shared_rng = np.random.default_rng(preset.optim.seed)  # identical on every rank
        self.model = self.precision.prepare(build_model(preset, self.clusters))
        self.projector = None
        if preset.contrast.weight > 0:
            self.projector = CrossModalProjector(preset.model.video_dim, preset.model.audio_dim, preset.contrast)
            self.projector.to(ctx.device)
        # one module for the training forward (logits and projections), so one DDP wrapper syncs both
        self.net = TrainingNet(self.model, self.projector)
        if ctx.distributed:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.net, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
            )
        self.state = TrainState()
        self.optimizer = self._optimizer()
        # Posteriors of each clip from its last training step (posteriors_from="training"): (H, N, K)
        # for video and audio, filled by the first labelling's pass and then by every training batch.
        self.memory: tuple[np.ndarray, np.ndarray | None] | None = None
        if preset.schedule.posteriors_from == "training" and ctx.distributed:
            self.log("posteriors_from 'training' needs one process; labelling with a pass under torchrun")

    # -- set-up ------------------------------------------------------------------------------------------
    def _param_groups(self) -> list[dict]:
        """Audio encoder and heads in their own group, so their learning rate can be scaled."""
        audio, other = [], []
        for name, param in self.model.named_parameters():
            (audio if name.startswith(("audio_network.", "mlp_a")) else other).append(param)
        if self.projector is not None:
            other += list(self.projector.parameters())
        groups = ({"params": other, "scale": 1.0}, {"params": audio, "scale": self.preset.optim.audio_lr_scale})
        return [g for g in groups if g["params"]]

    def _optimizer(self) -> torch.optim.Optimizer:
        o = self.preset.optim
        groups = self._param_groups()
        for g in groups:
            g["lr"] = o.lr * g["scale"]
        if o.optimizer == "adam":
            return torch.optim.Adam(groups, lr=o.lr, weight_decay=o.weight_decay)
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)

    def _set_lr(self, epoch: int) -> None:
        """Official recipe: linear warm-up per epoch from lr to lr x world size, then constant."""
        o = self.preset.optim
        target = o.lr * self.ctx.world
        lr = target if o.warmup_epochs <= 0 else o.lr + (target - o.lr) * min(1.0, epoch / o.warmup_epochs)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["scale"]

    @property
    def epochs(self) -> int:
        """Epochs of this run: the preset's, or more on a small set (``OptimSpec.train_samples``)."""
        return planned_epochs(self.preset.optim, len(self.rows))

    @property
    def batches_per_epoch(self) -> int:
        return len(self.rows) // (self.preset.optim.batch_size * self.ctx.world)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        """This rank's rows for one epoch (positions into self.rows), same shuffle on every rank."""
        perm = np.random.default_rng(self.preset.optim.seed + 7919 * (epoch + 1)).permutation(len(self.rows))
        per_rank = self.batches_per_epoch * self.preset.optim.batch_size
        return perm[self.ctx.rank :: self.ctx.world][:per_rank]

    # -- pseudo-labelling --------------------------------------------------------------------------------
    def _local_block(self) -> slice:
        n, w, r = len(self.rows), self.ctx.world, self.ctx.rank
        return slice(r * n // w, (r + 1) * n // w)

    def _allreduce(self, arr: np.ndarray) -> np.ndarray:
        if not self.ctx.distributed:
            return arr
        t = torch.from_numpy(np.ascontiguousarray(arr)).to(self.ctx.device)
        dist.all_reduce(t)
        return t.cpu().numpy()

    def _align(self, fv: np.ndarray, fa: np.ndarray) -> None:
        """Permute each audio head's outputs to match its video head, once (first labelling)."""
        s = self.preset.schedule
        for h in range(self.model.heads):
            lv, la = head_log_posteriors(self.model, fv, fa, h, self.ctx.device)
            lv, la = self._gather_sample(lv), self._gather_sample(la)
            perm = None
            if self.ctx.main:
                rng = np.random.default_rng(self.shared_rng.integers(1 << 31))
                perm, _ = align_permutation(
                    np.exp(lv),
                    np.exp(la),
                    max_proposals=s.align_proposals,
                    patience=s.align_patience,
                    restarts=s.align_restarts,
                    rng=rng,
                )
            perm = self._broadcast(perm, self.clusters)
            apply_permutation_to_linear(self.model.audio_head_last_linear(h), perm)

    def _gather_sample(self, x: np.ndarray) -> np.ndarray:
        """Rank 0 gets up to ``ScheduleSpec.align_max_rows`` rows in total (others get their own rows back)."""
        x = x[: self.preset.schedule.align_max_rows // self.ctx.world]
        if not self.ctx.distributed:
            return x
        t = torch.from_numpy(np.ascontiguousarray(x)).to(self.ctx.device)
        sizes = [torch.zeros(1, dtype=torch.long, device=self.ctx.device) for _ in range(self.ctx.world)]
        dist.all_gather(sizes, torch.tensor([len(x)], device=self.ctx.device))
        m = int(max(s.item() for s in sizes))
        pad = torch.zeros((m, x.shape[1]), dtype=t.dtype, device=t.device)
        pad[: len(x)] = t
        parts = [torch.zeros_like(pad) for _ in range(self.ctx.world)]
        dist.all_gather(parts, pad)
        return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes, strict=True)]).cpu().numpy()

    def _broadcast_array(self, arr: np.ndarray) -> np.ndarray:
        """Rank 0's copy everywhere (all-reduced floats can differ in the last bit between ranks)."""
        if not self.ctx.distributed:
            return arr
        t = torch.from_numpy(np.ascontiguousarray(arr)).to(self.ctx.device)
        dist.broadcast(t, 0)
        return t.cpu().numpy()

    def _broadcast(self, perm: np.ndarray | None, k: int) -> np.ndarray:
        if not self.ctx.distributed:
            return perm
        t = torch.as_tensor(perm if perm is not None else np.zeros(k, np.int64), device=self.ctx.device)
        dist.broadcast(t, 0)
        return t.cpu().numpy()

    def audio_weight(self) -> float:
        """The audio's share in the labels now: constant, or on its linear ramp over the training iterations."""
        s = self.preset.schedule
        if s.audio_weight_final is None:
            return s.audio_weight
        total = self.total_iters or self.epochs * self.batches_per_epoch
        done = min(1.0, self.state.iteration / max(1, total))
        return s.audio_weight + (s.audio_weight_final - s.audio_weight) * done

    def _ensure_prior_bases(self) -> None:
        st = self.state
        if st.prior_bases is None:
            heads = self.model.heads
            st.prior_bases = np.asarray(self.prior.draw(self.clusters, heads, self.shared_rng), dtype=np.float64)
            st.marginals = np.tile(np.full(self.clusters, 1.0 / self.clusters), (heads, 1))

    def relabel(self) -> None:
        """One Sinkhorn-Knopp labelling of every head, with decorrelated groups of heads."""
        st, s, sk = self.state, self.preset.schedule, self.preset.sinkhorn
        t0 = time.time()
        heads = self.model.heads
        block = self._local_block()
        local_rows = self.rows[block]
        n_total = len(self.rows)
        self._ensure_prior_bases()
        order = self.shared_rng.permutation(heads)
        groups = [order[g :: s.groups] for g in range(min(s.groups, heads))]
        labels = np.zeros((n_total, heads), np.int64)
        stats, agree = [], np.zeros(2, np.int64)
        w_audio = self.audio_weight()
        from_memory = self.memory is not None
        keep = s.posteriors_from == "training" and not self.ctx.distributed
        if keep and not from_memory:
            k = self.clusters
            self.memory = (
                np.zeros((heads, n_total, k), np.float32),
                np.zeros((heads, n_total, k), np.float32) if self.model.fusion == "augment" else None,
            )
        for g, group in enumerate(groups):
            if not from_memory:
                fv, fa = extract_features(
                    self.model,
                    self.maker,
                    local_rows,
                    precision=self.precision,
                    batch_size=self.preset.eval_batch_size,
                    train_aug=True,
                    rng=self.rng,
                    desc=f"labelling pass {g + 1}/{len(groups)}",
                )
                if not st.aligned and s.align and self.model.fusion == "augment":
                    self._align(fv, fa)
            for h in group:
                if from_memory:
                    lv, la = self.memory[0][h], None if self.memory[1] is None else self.memory[1][h]
                else:
                    lv, la = head_log_posteriors(self.model, fv, fa, int(h), self.ctx.device)
                    if keep:
                        self.memory[0][h] = lv
                        if la is not None:
                            self.memory[1][h] = la
                if s.equalise_confidence and la is not None:
                    margins = self._allreduce(np.array([margin_sum(lv), margin_sum(la)])) / n_total
                    lv_t, la_t = equalise_confidence(lv, la, *margins)
                    log_p = joint_log_posterior(lv_t, la_t, w_audio)
                else:
                    log_p = joint_log_posterior(lv, la, w_audio)
                # log_p is a weighted mean of two log posteriors: doubling it gives p_v p_a at audio_weight 0.5
                mass = self._allreduce(column_mass(log_p, power=1.0 if la is None else 2.0))
                marginal = self._broadcast_array(np.asarray(self.prior.marginal(st.prior_bases[h], mass), np.float64))
                st.marginals[h] = marginal
                solver = sinkhorn_knopp_distributed if self.ctx.distributed else sinkhorn_knopp
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
        labels = self._allreduce(labels)
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
            # the largest cluster's share of the clips, averaged over heads (1/K when sizes are even;
            # near 1 when one cluster swallows the data)
            "largest_share": round(
                float(np.mean([np.bincount(labels[:, h], minlength=self.clusters).max() for h in range(heads)]))
                / n_total,
                4,
            ),
            "audio_weight": round(w_audio, 4),
        }
        if self.fixed is not None:
            record["fixed_rows"] = self.fixed.n_fixed
        if self.model.fusion == "augment":
            agreement = self._allreduce(agree) / (n_total * heads)
            record["agree_video"], record["agree_audio"] = (round(float(x), 4) for x in agreement)
        if previous is not None:
            record["stability_nmi"] = round(float(nmi(previous[:, 0], labels[:, 0])), 4)
        if self.gt is not None:
            known = self.gt != -1
            record["nmi_gt_head0"] = round(float(nmi(self.gt[known], labels[known, 0])), 4)
            record["nmi_gt_best"] = round(max(float(nmi(self.gt[known], labels[known, h])) for h in range(heads)), 4)
        st.history.append(record)
        self.log("labelling " + json.dumps(record))

    # -- training ----------------------------------------------------------------------------------------
    def _remember(self, rows_pos: np.ndarray, out_a: list[torch.Tensor], out_b: list[torch.Tensor] | None) -> None:
        """Keep this batch's posteriors for the next labelling (posteriors_from="training")."""
        with torch.no_grad():
            for mem, outs in zip(self.memory, (out_a, out_b), strict=True):
                if mem is not None:
                    logp = torch.log_softmax(torch.stack([o.detach().float() for o in outs]), dim=2)
                    new = logp.cpu().numpy()
                    m = self.preset.schedule.memory_momentum
                    if m > 0:  # running mean of the probabilities, in log space
                        new = np.logaddexp(np.log(m) + mem[:, rows_pos], np.log1p(-m) + new)
                    mem[:, rows_pos] = new

    def _loss(
        self, video: torch.Tensor, audio: torch.Tensor, y: torch.Tensor, rows_pos: np.ndarray
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The training loss, and its parts for the log: ``label_loss`` (SeLaVi's cross-entropy with the
        labels) and, when the matching loss is on, ``contrast_loss``."""
        out_a, out_b, z = self.net(video, audio)
        if self.memory is not None:
            self._remember(rows_pos, out_a, out_b)
        loss = self_label_loss(out_a, out_b, y)
        parts = {"label_loss": float(loss.detach())}
        if z is None:
            return loss, parts
        nce = correspondence_loss(z[0], z[1], self.preset.contrast.temperature)
        parts["contrast_loss"] = float(nce.detach())
        return loss + self.preset.contrast.weight * nce, parts

    @torch.no_grad()
    def bn_warmup(self) -> None:
        """Forward a few training batches in train mode so BN statistics are sane before labelling."""
        self.net.train()
        order = self._epoch_order(0)
        bs = self.preset.optim.batch_size
        for b in range(min(self.preset.schedule.bn_warmup_batches, self.batches_per_epoch)):
            video, audio = self.maker.batch(self.rows[order[b * bs : (b + 1) * bs]], train=True, rng=self.rng)
            video, audio = self.precision.inputs(video, audio)
            with self.precision.autocast():
                self.net(video, audio)

    def fit(self, epochs: int) -> None:
        st, bs = self.state, self.preset.optim.batch_size
        per_epoch = self.batches_per_epoch
        total = epochs * per_epoch
        self.total_iters = total
        points = [
            p
            for p in schedule_points(total, self.preset.schedule.n_opts, self.preset.schedule.power)
            if p >= st.iteration
        ]
        if st.labels is None:
            self.bn_warmup()
        t_start = time.time()
        for epoch in range(st.epoch, epochs):
            st.epoch = epoch
            self._set_lr(epoch)
            order = self._epoch_order(epoch)
            losses: list[float] = []
            parts: dict[str, list[float]] = {}
            bar = progress(range(per_epoch), desc=f"epoch {epoch + 1}/{epochs}", unit="batch")
            for b in bar:
                if points and st.iteration >= points[0]:
                    while points and st.iteration >= points[0]:
                        points.pop(0)
                    self.relabel()
                self.net.train()
                rows_pos = order[b * bs : (b + 1) * bs]
                video, audio = self.maker.batch(self.rows[rows_pos], train=True, rng=self.rng)
                video, audio = self.precision.inputs(video, audio)
                y = torch.from_numpy(st.labels[rows_pos]).to(self.ctx.device)
                with self.precision.autocast():
                    loss, step_parts = self._loss(video, audio, y, rows_pos)
                if not torch.isfinite(loss):
                    raise SelaviError(
                        f"training diverged at epoch {epoch + 1}, batch {b + 1} (loss {float(loss)}); "
                        "lower --lr or train without bf16"
                    )
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                losses.append(float(loss.detach()))
                for key, value in step_parts.items():
                    parts.setdefault(key, []).append(value)
                st.iteration += 1
            record = {
                "epoch": epoch + 1,
                "loss": round(float(np.mean(losses)), 4),
                "seconds": round(time.time() - t_start, 1),
                "labellings": st.n_labellings,
            }
            record.update({key: round(float(np.mean(values)), 4) for key, values in parts.items()})
            last = st.history[-1] if st.history else {}
            for key in ("stability_nmi", "nmi_gt_head0", "nmi_gt_best"):
                if key in last:
                    record[key] = last[key]
            self.log("epoch " + json.dumps(record))
            st.epoch = epoch + 1
            st.refined = False  # heads trained on: a refined run resumed for more epochs is refined again
            if self.ctx.main:
                with open(self.out / LOG_NAME, "a") as f:
                    f.write(json.dumps({"type": "epoch", **record, "labelling_log": st.history[-1:]}) + "\n")
                self.save()

    def refine(self) -> tuple[np.ndarray, np.ndarray] | None:
        """After the last epoch: RefineSpec's rounds on the heads over frozen, un-augmented features.

        Runs once per run (a resumed, refined run skips it) on the main process; other ranks receive the
        refined heads. Returns the features (eval mode, every clip in order), which are exactly what
        assignment computes, or None when nothing was run on this process.
        """
        st, spec = self.state, self.preset.refine
        if spec.rounds == 0 or st.refined:
            return None
        self._ensure_prior_bases()
        features = None
        if self.ctx.main:
            fv, fa = extract_features(
                self.model,
                self.maker,
                self.rows,
                precision=self.precision,
                batch_size=self.preset.eval_batch_size,
                train_aug=False,
                rng=np.random.default_rng(0),
                desc="refine features",
            )

            def marginal(h: int, mass: np.ndarray) -> np.ndarray:
                if spec.target == "uniform":
                    st.marginals[h] = np.full(self.clusters, 1.0 / self.clusters)
                else:
                    st.marginals[h] = np.asarray(self.prior.marginal(st.prior_bases[h], mass), np.float64)
                return st.marginals[h]

            records = refine_heads(
                self.model,
                fv,
                fa,
                spec=spec,
                sinkhorn=self.preset.sinkhorn,
                marginal=marginal,
                device=self.ctx.device,
                seed=self.preset.optim.seed,
                weight_decay=self.preset.optim.weight_decay,
                truth=self.gt,
                log=self.log,
                fixed=self.fixed,
            )
            st.history.extend(records)
            with open(self.out / LOG_NAME, "a") as f:
                for r in records:
                    f.write(json.dumps({"type": "refine", **r}) + "\n")
            features = (fv, fa)
        if self.ctx.distributed:
            for p in self.model.head_parameters():
                dist.broadcast(p.data, 0)
            for b in (b for n, b in self.model.named_buffers() if n.startswith("mlp_")):
                dist.broadcast(b, 0)
            st.marginals = self._broadcast_array(st.marginals)
        st.refined = True
        if self.ctx.main:
            self.save()
        return features

    # -- checkpoints -------------------------------------------------------------------------------------
    def save(self) -> None:
        st = self.state
        extra = {
            "iteration": st.iteration,
            "aligned": st.aligned,
            "n_labellings": st.n_labellings,
            "refined": st.refined,
            "labels": torch.from_numpy(st.labels) if st.labels is not None else None,
            "prior_bases": torch.from_numpy(st.prior_bases) if st.prior_bases is not None else None,
            "marginals": torch.from_numpy(st.marginals) if st.marginals is not None else None,
            "history": json.dumps(st.history),
            "catalog_hash": self.catalog_hash,
            "clip_ids": json.dumps(list(map(str, self.clip_ids))),
            "rng": json.dumps({"rng": self.rng.bit_generator.state, "shared": self.shared_rng.bit_generator.state}),
            "torch_rng": torch.get_rng_state(),
            "labels_from": None if self.constraints_info is None else json.dumps(self.constraints_info),
            "projector": None if self.projector is None else self.projector.state_dict(),
        }
        save_checkpoint(
            self.out / CHECKPOINT_NAME,
            model=self.model,
            optimizer=self.optimizer,
            epoch=st.epoch,
            preset=self.preset,
            clusters=self.clusters,
            extra=extra,
        )

    def resume(self) -> bool:
        path = self.out / CHECKPOINT_NAME
        if not path.is_file():
            return False
        ckpt = load_checkpoint(path)
        extra = ckpt["extra"]
        if extra.get("catalog_hash") != self.catalog_hash:
            raise SelaviError(f"{path} was trained on another catalog; use a new --out or delete the checkpoint")
        self.model.load_state_dict(ckpt["model"])
        if self.projector is not None and extra.get("projector") is not None:
            self.projector.load_state_dict(extra["projector"])
        if ckpt.get("optimizer"):
            self.optimizer.load_state_dict(ckpt["optimizer"])
        st = self.state
        st.epoch, st.iteration = int(ckpt["epoch"]), int(extra["iteration"])
        st.aligned, st.n_labellings = bool(extra["aligned"]), int(extra["n_labellings"])
        st.refined = bool(extra.get("refined", False))
        for name in ("labels", "prior_bases", "marginals"):
            value = extra.get(name)
            setattr(st, name, value.numpy() if value is not None else None)
        st.history = json.loads(extra["history"])
        rng = json.loads(extra["rng"])
        self.rng.bit_generator.state = rng["rng"]
        self.shared_rng.bit_generator.state = rng["shared"]
        torch.set_rng_state(extra["torch_rng"])
        self.log(f"resumed from {path} at epoch {st.epoch} (iteration {st.iteration})")
        return True


def train(
    catalog_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    preset: Preset,
    *,
    device: str = "auto",
    resume: bool = False,
    log=print,
    constraints: LabelConstraints | None = None,
) -> Path:
    """Train SeLaVi on a catalog and write the run folder (checkpoint, log, assignments).

    ``constraints`` (``LabelConstraints.from_run(RUN1)``) pins the clips people labelled in another run to one
    cluster per label name in every labelling; run.json's ``extra["labels_from"]`` records where they came from.
    The preset is validated first (``Preset.validate``), before anything is written.
    """
    preset.validate()
    ctx = setup_context(device)
    out = Path(out_dir)
    if ctx.main:
        out.mkdir(parents=True, exist_ok=True)
        if not resume:
            for stale in (CHECKPOINT_NAME, LOG_NAME):
                (out / stale).unlink(missing_ok=True)
    if ctx.distributed:
        dist.barrier()
    trainer = Trainer(catalog_dir, out, preset, ctx=ctx, log=log, constraints=constraints)
    if resume:
        trainer.resume()
    if ctx.main:
        (out / "preset.json").write_text(json.dumps(preset.to_dict(), indent=2))
    t0 = time.time()
    trainer.log(f"training {trainer.epochs} epochs of {len(trainer.rows)} clips")
    trainer.fit(trainer.epochs)
    features = trainer.refine()
    seconds = time.time() - t0
    if ctx.main:
        write_assignments(
            trainer.model,
            trainer.cache,
            preset,
            catalog_dir=trainer.catalog_dir,
            catalog_hash=trainer.catalog_hash,
            out_dir=out,
            device=ctx.device,
            checkpoint=out / CHECKPOINT_NAME,
            priors=trainer.state.marginals,
            prior=preset.schedule.prior,
            source="train",
            extra={
                "train_seconds": round(seconds, 1),
                "epochs": trainer.epochs,
                **({} if trainer.constraints_info is None else {"labels_from": trainer.constraints_info}),
            },
            features=features,
        )
    if ctx.distributed:
        dist.barrier()
        dist.destroy_process_group()
    return out
