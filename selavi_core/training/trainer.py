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

This module is the loop; its parts live beside it: ``labelling`` (Sinkhorn pseudo-labels over the data set),
``distributed`` (process group and collectives: pseudo-labelling shards rows across ranks, so no rank ever
holds N x K for the whole data set), ``state`` (what a resume needs), ``refine`` (the heads-only rounds).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from selavi_core.catalog import catalog_hash, load_catalog
from selavi_core.config import Preset, planned_epochs
from selavi_core.errors import SelaviError
from selavi_core.model.checkpoint import load_checkpoint, save_checkpoint
from selavi_core.model.device import precision_for
from selavi_core.model.inference import extract_features
from selavi_core.model.networks import build_model, self_label_loss
from selavi_core.progress import progress
from selavi_core.runs.assign import write_assignments
from selavi_core.selflabel.priors import parse_prior
from selavi_core.training import distributed
from selavi_core.training.constraints import FixedRows, LabelConstraints
from selavi_core.training.contrast import CrossModalProjector, TrainingNet, correspondence_loss
from selavi_core.training.distributed import Context, setup_context
from selavi_core.training.labelling import Labeller, audio_weight
from selavi_core.training.loader import Loader
from selavi_core.training.refine import refine_heads
from selavi_core.training.state import TrainState
from selavi_core.training.windows import batch_maker, open_source

__all__ = ["CHECKPOINT_NAME", "LOG_NAME", "Context", "TrainState", "Trainer", "schedule_points", "train"]

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "train_log.jsonl"


def schedule_points(total_iters: int, n_opts: int, power: float) -> list[int]:
    """Iterations at which pseudo-labels are recomputed: t_j = T (j/(n-1))^p for j < n-1."""
    n = max(2, n_opts)
    return sorted({int(math.floor(total_iters * (j / (n - 1)) ** power)) for j in range(n - 1)})


class Trainer:
    """SeLaVi training of one process (one of many under torchrun): data, model, optimiser and the loop.

    ``fit`` trains, relabelling at the schedule's points (``Labeller``); ``refine`` runs the heads-only rounds;
    ``save``/``resume`` write and read the checkpoint. The preset is taken as validated (``train`` does it).
    """

    def __init__(
        self,
        catalog_dir: str | os.PathLike,
        out_dir: str | os.PathLike,
        preset: Preset,
        *,
        ctx: Context,
        log: Callable[[str], None] = print,
        constraints: LabelConstraints | None = None,
    ):
        self.catalog_dir, self.out = Path(catalog_dir), Path(out_dir)
        self.preset, self.ctx, self.log = preset, ctx, log if ctx.main else (lambda *a, **k: None)
        self.prior = parse_prior(preset.schedule.prior, gauss_sd=preset.schedule.gauss_sd)
        self.total_iters: int | None = None  # set by fit(): the audio weight's ramp spans it
        catalog = load_catalog(self.catalog_dir)
        self.catalog_hash = catalog_hash(self.catalog_dir)
        # the uint8 cache (built by rank 0 first) or, for presets without one, the original files
        if ctx.main:
            self.cache = open_source(catalog, self.catalog_dir, self.catalog_hash, preset, log=self.log)
        distributed.barrier(ctx)
        if not ctx.main:
            self.cache = open_source(catalog, self.catalog_dir, self.catalog_hash, preset, log=self.log)
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
        self.fixed: FixedRows | None = None
        self.constraints_info: dict[str, Any] | None = None
        if constraints is not None:
            self.fixed = constraints.for_rows(ids, self.clusters)
            self.constraints_info = info = constraints.summary(self.fixed)
            self.log(
                f"labels from {info.get('run_dir', '?')} (head {info.get('head', '?')}): {len(constraints.names)} "
                f"names, {info['fixed_rows']} clips pinned, {info['ignored_clips']} labelled clips not in this training"
            )
        self.maker = batch_maker(self.cache, preset)
        # batches in this process (workers 0) or in DataLoader workers, the cores shared by this node's ranks
        self.workers = preset.optim.data_workers(int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        self.loader = Loader(self.maker, workers=self.workers, device=ctx.device)
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
        self.net = distributed.wrap(ctx, TrainingNet(self.model, self.projector))
        self.state = TrainState()
        self.optimizer = self._optimizer()
        self.labeller = Labeller(
            self.model,
            self.loader,
            self.rows,
            preset,
            ctx=ctx,
            precision=self.precision,
            prior=self.prior,
            clusters=self.clusters,
            fixed=self.fixed,
            truth=self.gt,
            log=self.log,
        )
        if preset.schedule.posteriors_from == "training" and ctx.distributed:
            self.log("posteriors_from 'training' needs one process; labelling with a pass under torchrun")

    # -- set-up ------------------------------------------------------------------------------------------
    def _param_groups(self) -> list[dict]:
        """Audio encoder and heads in their own group, so their learning rate can be scaled."""
        audio: list[torch.nn.Parameter] = []
        other: list[torch.nn.Parameter] = []
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

    # -- pseudo-labelling (selavi_core.training.labelling) ----------------------------------------------------
    def audio_weight(self) -> float:
        """The audio's share in the labels now: constant, or on its linear ramp over the training iterations."""
        total = self.total_iters or self.epochs * self.batches_per_epoch
        return audio_weight(self.preset.schedule, self.state.iteration, total)

    def relabel(self) -> None:
        """One Sinkhorn-Knopp labelling of every head, with decorrelated groups of heads."""
        self.labeller.relabel(self.state, rng=self.rng, shared_rng=self.shared_rng, w_audio=self.audio_weight())

    # -- training ----------------------------------------------------------------------------------------
    def _loss(
        self, video: torch.Tensor, audio: torch.Tensor, y: torch.Tensor, rows_pos: np.ndarray
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The training loss, and its parts for the log: ``label_loss`` (SeLaVi's cross-entropy with the
        labels) and, when the matching loss is on, ``contrast_loss``."""
        out_a, out_b, z = self.net(video, audio)
        self.labeller.remember(rows_pos, out_a, out_b)
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
        n = min(self.preset.schedule.bn_warmup_batches, self.batches_per_epoch)
        batches = [self.rows[order[b * bs : (b + 1) * bs]] for b in range(n)]
        for video, audio in self.loader.iterate(batches, train=True, rng=self.rng):
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
            batches = [self.rows[order[b * bs : (b + 1) * bs]] for b in range(per_epoch)]
            losses: list[float] = []
            parts: dict[str, list[float]] = {}
            # The batches of one segment (up to the next labelling) stream from the loader; a labelling starts
            # only once a segment is used up, since its pass over the data shares the loader's workers.
            segment: Iterator[tuple[torch.Tensor, torch.Tensor]] = iter(())
            left = 0
            step_s, wait_before = 0.0, self.loader.wait_s
            bar = progress(range(per_epoch), desc=f"epoch {epoch + 1}/{epochs}", unit="batch")
            for b in bar:
                if points and st.iteration >= points[0]:
                    while points and st.iteration >= points[0]:
                        points.pop(0)
                    self.relabel()
                if left == 0:
                    stop = per_epoch if not points else min(per_epoch, b + points[0] - st.iteration)
                    segment, left = self.loader.iterate(batches[b:stop], train=True, rng=self.rng), stop - b
                t_step = time.perf_counter()
                self.net.train()
                rows_pos = order[b * bs : (b + 1) * bs]
                video, audio = next(segment)
                left -= 1
                video, audio = self.precision.inputs(video, audio)
                assert st.labels is not None, "the schedule labels at iteration 0, and a resumed run has labels"
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
                step_s += time.perf_counter() - t_step
            record = {
                "epoch": epoch + 1,
                "loss": round(float(np.mean(losses)), 4),
                "seconds": round(time.time() - t_start, 1),
                "labellings": st.n_labellings,
                # training steps only (labellings aside): clips a second, and the share of it spent waiting for data
                "clips_per_s": round(per_epoch * bs * self.ctx.world / max(step_s, 1e-9), 2),
                "data_wait": round((self.loader.wait_s - wait_before) / max(step_s, 1e-9), 4),
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
        prior_bases, marginals = self.labeller.ensure_prior_bases(st, self.shared_rng)
        features = None
        if self.ctx.main:
            fv, fa = extract_features(
                self.model,
                self.loader,
                self.rows,
                precision=self.precision,
                batch_size=self.preset.eval_batch_size,
                train_aug=False,
                rng=np.random.default_rng(0),
                desc="refine features",
            )

            def marginal(h: int, mass: np.ndarray) -> np.ndarray:
                if spec.target == "uniform":
                    marginals[h] = np.full(self.clusters, 1.0 / self.clusters)
                else:
                    marginals[h] = np.asarray(self.prior.marginal(prior_bases[h], mass), np.float64)
                return marginals[h]

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
            distributed.broadcast_heads(self.ctx, self.model)
            st.marginals = distributed.broadcast_array(self.ctx, marginals)
        st.refined = True
        if self.ctx.main:
            self.save()
        return features

    # -- checkpoints -------------------------------------------------------------------------------------
    def save(self) -> None:
        st = self.state
        extra = {
            **st.to_extra(),
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
        self.state = st = TrainState.from_checkpoint(ckpt)
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
    log: Callable[[str], None] = print,
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
    distributed.barrier(ctx)
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
    trainer.loader.close()
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
    distributed.shutdown(ctx)
    return out
