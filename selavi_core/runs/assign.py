"""Assignments: run a trained (or official) model over every clip and write the run folder.

One centred clip and centre crop per clip, as the official evaluation. The run folder records the
catalog's location and hash and the checkpoint's hash, so ``selavi evaluate`` and the Studio find
the ground truth and provenance by themselves. It also holds raw-input features of the same clips
(selavi_core/runs/raw_features.py), so that evaluation can show what k-means on the inputs alone gives.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from selavi_core.catalog import catalog_hash, load_catalog
from selavi_core.model.checkpoint import load_model
from selavi_core.config import PAPER, Preset
from selavi_core.training.loader import Loader
from selavi_core.training.windows import ClipSource, batch_maker, open_source
from selavi_core.errors import SelaviError
from selavi_core.model.inference import extract_features, predictions
from selavi_core.model.networks import SeLaViModel
from selavi_core.model.device import precision_for, resolve_device
from selavi_core.runs.raw_features import raw_features
from selavi_core.io import file_hash
from selavi_core.runs.run import RunMeta, write_run


def write_assignments(
    model: SeLaViModel,
    cache: ClipSource,
    preset: Preset,
    *,
    catalog_dir: str | os.PathLike,
    catalog_hash: str,
    out_dir: str | os.PathLike,
    device: torch.device,
    checkpoint: str | os.PathLike | None,
    priors: np.ndarray | None,
    prior: str,
    source: str,
    extra: dict | None = None,
    features: tuple[np.ndarray, np.ndarray] | None = None,
) -> Path:
    """Assign every ok clip of ``cache`` (the decoded cache or the original files) and write the run folder.
    ``features`` (video, audio) of those clips in eval mode may be passed when already computed (training's
    refine step does). Batches come from ``preset.optim.workers`` DataLoader workers.

    Raw-input features of the same rows go to ``features/raw_video.npy`` and ``raw_audio.npy`` for
    evaluation's no-learning baselines."""
    rows = cache.ok_rows
    if features is not None and not len(features[0]) == len(features[1]) == len(rows):
        raise SelaviError(f"features for {len(features[0])} clips were passed, but the cache has {len(rows)} ok clips")
    if features is None:
        loader = Loader(batch_maker(cache, preset), workers=preset.optim.data_workers(), device=device)
        try:
            features = extract_features(
                model,
                loader,
                rows,
                precision=precision_for(device, preset.cpu_bf16),
                batch_size=preset.eval_batch_size,
                train_aug=False,
                rng=np.random.default_rng(0),
                desc="assigning clips",
            )
        finally:
            loader.close()
    fv, fa = features
    pred = predictions(model, fv, fa, device)
    heads, k = model.heads, model.clusters
    if priors is None:
        priors = np.full((heads, k), 1.0 / k)
    meta = RunMeta(
        catalog_dir=str(Path(catalog_dir).resolve()),
        catalog_hash=catalog_hash,
        heads=heads,
        clusters=k,
        preset=preset.name,
        prior=prior,
        fusion=model.fusion,
        checkpoint=str(Path(checkpoint).resolve()) if checkpoint else None,
        checkpoint_hash=file_hash(checkpoint) if checkpoint and Path(checkpoint).is_file() else None,
        source=source,
        extra=extra or {},
    )
    return write_run(
        out_dir,
        meta,
        cache.index["clip_id"].to_numpy()[rows],
        joint=pred["joint"],
        video=pred["video"],
        audio=pred["audio"],
        confidence=pred["confidence"],
        margin=pred["margin"],
        features_video=fv,
        features_audio=fa,
        priors=np.asarray(priors),
        raw_features=raw_features(cache, rows, preset),
    )


def load_model_for_assignment(checkpoint: str | os.PathLike) -> tuple[SeLaViModel, Preset, np.ndarray | None, str]:
    """Our checkpoint (its preset travels with it) or an official SeLaVi file (the paper preset's inputs)."""
    model, info = load_model(checkpoint)  # weights_only, strict, CheckpointError listing unmatched keys
    if info["format"] == "official":
        dist = info.get("dist")
        priors = None if dist is None else (dist / dist.sum(dim=1, keepdim=True)).numpy()
        return model, PAPER, priors, "gauss (official)"
    preset = info["preset"]
    marginals = info["extra"].get("marginals")
    return model, preset, None if marginals is None else marginals.numpy(), str(preset.schedule.prior)


def assign(
    catalog_dir: str | os.PathLike,
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> Path:
    dev = resolve_device(device)
    model, preset, priors, prior = load_model_for_assignment(checkpoint)
    preset.validate()
    model = precision_for(dev, preset.cpu_bf16).prepare(model)
    catalog = load_catalog(catalog_dir)
    chash = catalog_hash(catalog_dir)
    cache = open_source(catalog, catalog_dir, chash, preset, log=log)
    return write_assignments(
        model,
        cache,
        preset,
        catalog_dir=catalog_dir,
        catalog_hash=chash,
        out_dir=out_dir,
        device=dev,
        checkpoint=checkpoint,
        priors=priors,
        prior=prior,
        source="assign",
    )
