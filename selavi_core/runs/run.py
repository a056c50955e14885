"""The run folder: per-head cluster assignments and features of one model over one catalog.

Written by ``selavi assign`` (and at the end of ``selavi train``); read by ``selavi evaluate``, the
Studio and the label store. Layout (all arrays row-aligned with ``clips.parquet``)::

    RUN_DIR/run.json                      RunMeta: catalog location and hash, checkpoint, preset, H, K, prior
    RUN_DIR/clips.parquet                 clip_id in row order
    RUN_DIR/assignments/joint.npy         int32 (N, H)  argmax of p_video * p_audio
    RUN_DIR/assignments/video.npy         int32 (N, H)  argmax of p_video
    RUN_DIR/assignments/audio.npy         int32 (N, H)  argmax of p_audio
    RUN_DIR/assignments/confidence.npy    float32 (N, H) normalised joint probability of the chosen cluster
    RUN_DIR/assignments/margin.npy        float32 (N, H) that probability minus the second best
    RUN_DIR/features/video.npy            float16 (N, Dv) pooled encoder features
    RUN_DIR/features/audio.npy            float16 (N, Da)
    RUN_DIR/features/raw_video.npy        float32 (N, 1024) raw-input features for the no-learning baselines
    RUN_DIR/features/raw_audio.npy        float32 (N, 2 n_mels)  (selavi_core/runs/raw_features.py; written by assignment)
    RUN_DIR/priors.npy                    float64 (H, K) target cluster marginal each head was trained with
    RUN_DIR/assignment_history/ID/        joint.npy + clips.parquet of every assignment this folder held before
                                          (kept by ``write_run`` when it replaces them: the label store carries
                                          cluster names from the assignment they were given on, by the clips)

An assignment is identified by ``assignment_id``: a hash of the checkpoint hash, the catalog hash, the clip
ids and the joint assignments (``RunMeta.assignment_id``; computed from the files for folders written
before it was recorded). Re-assigning the same checkpoint over the same catalog gives the same id.

Arrays are plain ``.npy`` so readers memory-map them: opening a 200,000-clip run costs milliseconds
and one copy of the data is shared by every reader in a process.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from selavi_core.errors import RunError
from selavi_core.io import replace_tree

META_FILE = "run.json"
CLIPS_FILE = "clips.parquet"
HISTORY_DIR = "assignment_history"
ASSIGNMENT_KINDS = ("joint", "video", "audio")
SCORE_KINDS = ("confidence", "margin")
MODALITIES = ("video", "audio")


@dataclass
class RunMeta:
    catalog_dir: str
    catalog_hash: str
    heads: int
    clusters: int
    preset: str
    prior: str = "uniform"
    fusion: str = "augment"
    checkpoint: str | None = None
    checkpoint_hash: str | None = None
    source: str = "assign"  # assign | train | synthetic
    created: float = field(default_factory=time.time)
    n_clips: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    assignment_id: str | None = None  # assignment_hash of this folder's assignment (None: written before it was kept)


def assignment_hash(
    checkpoint_hash: str | None, catalog_hash: str, clip_ids: np.ndarray | list[str], joint: np.ndarray
) -> str:
    """The id of one assignment: a hash of the checkpoint and catalog hashes, the clip ids and the joint clusters."""
    h = hashlib.sha256(json.dumps([checkpoint_hash, catalog_hash]).encode())
    h.update(hashlib.sha256("\n".join(str(c) for c in clip_ids).encode()).digest())
    arr = np.ascontiguousarray(joint, dtype=np.int32)
    h.update(repr(arr.shape).encode())
    h.update(arr.tobytes())
    return h.hexdigest()[:16]


def _archive_outgoing(run_dir: Path, new_id: str, tmp: Path) -> None:
    """Keep the joint assignments and clip ids that ``run_dir`` holds now under ``assignment_history/ID``.

    Called by ``write_run`` before it replaces them (the label store reads them back to carry cluster names
    over to the new assignment by their clips). An unreadable or missing old assignment is not kept.
    """
    try:
        old = Run(run_dir)
        old_id = old.assignment_id
        joint = np.asarray(old.assignments("joint"), dtype=np.int32)
        ids = old.clip_ids
    except (RunError, OSError, ValueError):
        return
    final = run_dir / HISTORY_DIR / old_id
    if old_id == new_id or final.exists():
        return
    staged = tmp / "history"
    staged.mkdir()
    np.save(staged / "joint.npy", joint)
    pd.DataFrame({"clip_id": np.asarray(ids).astype(str)}).to_parquet(staged / CLIPS_FILE, index=False)
    final.parent.mkdir(exist_ok=True)
    os.replace(staged, final)


def write_run(
    run_dir: str | os.PathLike,
    meta: RunMeta,
    clip_ids: np.ndarray | list[str],
    *,
    joint: np.ndarray,
    video: np.ndarray,
    audio: np.ndarray,
    confidence: np.ndarray,
    margin: np.ndarray,
    features_video: np.ndarray,
    features_audio: np.ndarray,
    priors: np.ndarray,
    raw_features: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write a complete run folder atomically: readers never see a half-written run.

    Everything goes to a sibling temporary folder first, which then replaces ``run_dir``'s
    assignment files in one rename each; a checkpoint or log already in ``run_dir`` is kept.
    ``raw_features`` (modality -> (N, D) block, ``selavi_core.runs.raw_features``) go into ``features/`` with
    the learned ones, so the raw baselines always describe the same assignment.
    """
    run_dir = Path(run_dir)
    clip_ids = np.asarray(clip_ids, dtype=object)
    n = len(clip_ids)
    arrays = {"joint": joint, "video": video, "audio": audio, "confidence": confidence, "margin": margin}
    for name, arr in arrays.items():
        if arr.shape != (n, meta.heads):
            raise RunError(f"{name} has shape {arr.shape}, expected ({n}, {meta.heads})")
    for name, arr in (("features_video", features_video), ("features_audio", features_audio)):
        if arr.ndim != 2 or arr.shape[0] != n:
            raise RunError(f"{name} has shape {arr.shape}, expected ({n}, D)")
    for name, arr in (raw_features or {}).items():
        if arr.ndim != 2 or arr.shape[0] != n:
            raise RunError(f"raw {name} features have shape {arr.shape}, expected ({n}, D)")
    if priors.shape != (meta.heads, meta.clusters):
        raise RunError(f"priors has shape {priors.shape}, expected ({meta.heads}, {meta.clusters})")

    run_dir.mkdir(parents=True, exist_ok=True)
    meta.n_clips = n
    meta.assignment_id = assignment_hash(meta.checkpoint_hash, meta.catalog_hash, clip_ids, joint)
    tmp = Path(tempfile.mkdtemp(prefix=".run-", dir=run_dir))
    try:
        _archive_outgoing(run_dir, meta.assignment_id, tmp)
        (tmp / "assignments").mkdir()
        (tmp / "features").mkdir()
        for name in ASSIGNMENT_KINDS:
            np.save(tmp / "assignments" / f"{name}.npy", np.ascontiguousarray(arrays[name], dtype=np.int32))
        for name in SCORE_KINDS:
            np.save(tmp / "assignments" / f"{name}.npy", np.ascontiguousarray(arrays[name], dtype=np.float32))
        np.save(tmp / "features" / "video.npy", np.ascontiguousarray(features_video, dtype=np.float16))
        np.save(tmp / "features" / "audio.npy", np.ascontiguousarray(features_audio, dtype=np.float16))
        for name, arr in (raw_features or {}).items():
            np.save(tmp / "features" / f"raw_{name}.npy", np.ascontiguousarray(arr, dtype=np.float32))
        np.save(tmp / "priors.npy", np.asarray(priors, dtype=np.float64))
        pd.DataFrame({"clip_id": clip_ids.astype(str)}).to_parquet(tmp / CLIPS_FILE, index=False)
        (tmp / META_FILE).write_text(json.dumps(asdict(meta), indent=2))
        for sub in ("assignments", "features"):
            replace_tree(tmp / sub, run_dir / sub)
        for name in ("priors.npy", CLIPS_FILE, META_FILE):  # meta last: it marks the run complete
            os.replace(tmp / name, run_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return run_dir


class Run:
    """Read-only view of a run folder. Arrays are memory-mapped and loaded on first use."""

    def __init__(self, run_dir: str | os.PathLike):
        self.dir = Path(run_dir)
        meta_path = self.dir / META_FILE
        if not meta_path.is_file():
            raise RunError(
                f"{self.dir} is not a run folder (no {META_FILE}); create one with `selavi assign` or `selavi train`"
            )
        try:
            raw = json.loads(meta_path.read_text())
            self.meta = RunMeta(**raw)
        except (ValueError, TypeError) as err:
            raise RunError(f"{meta_path} is unreadable: {err}") from err

    @property
    def heads(self) -> int:
        return self.meta.heads

    @property
    def clusters(self) -> int:
        return self.meta.clusters

    @property
    def n_clips(self) -> int:
        return self.meta.n_clips

    def _load(self, *parts: str) -> np.ndarray:
        path = self.dir.joinpath(*parts)
        if not path.is_file():
            raise RunError(f"run {self.dir} lacks {'/'.join(parts)}")
        return np.load(path, mmap_mode="r")

    @cached_property
    def clip_ids(self) -> np.ndarray:
        return pd.read_parquet(self.dir / CLIPS_FILE, columns=["clip_id"])["clip_id"].to_numpy(dtype=object)

    def assignments(self, kind: str = "joint") -> np.ndarray:
        """(N, H) int32 clusters: ``joint`` (the SeLaVi prediction), ``video`` or ``audio``-only."""
        if kind not in ASSIGNMENT_KINDS:
            raise ValueError(f"kind must be one of {ASSIGNMENT_KINDS}, not {kind!r}")
        return self._load("assignments", f"{kind}.npy")

    def scores(self, kind: str = "confidence") -> np.ndarray:
        if kind not in SCORE_KINDS:
            raise ValueError(f"kind must be one of {SCORE_KINDS}, not {kind!r}")
        return self._load("assignments", f"{kind}.npy")

    def features(self, modality: str = "video") -> np.ndarray:
        """(N, D) float16 features; ``concat`` gives both modalities side by side (a float32 copy)."""
        if modality == "concat":
            return np.concatenate([np.asarray(self.features(m), dtype=np.float32) for m in MODALITIES], axis=1)
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES + ('concat',)}, not {modality!r}")
        return self._load("features", f"{modality}.npy")

    @cached_property
    def assignment_id(self) -> str:
        """This folder's assignment (``assignment_hash``): from ``run.json``, else computed from the files."""
        if self.meta.assignment_id:
            return self.meta.assignment_id
        return assignment_hash(self.meta.checkpoint_hash, self.meta.catalog_hash, self.clip_ids, self.assignments())

    def past_assignment(self, assignment_id: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(clip ids, joint (N, H)) of an assignment this folder holds now or held before; None when not kept."""
        if assignment_id == self.assignment_id:
            return self.clip_ids, np.asarray(self.assignments("joint"))
        folder = self.dir / HISTORY_DIR / assignment_id
        if not (folder / "joint.npy").is_file() or not (folder / CLIPS_FILE).is_file():
            return None
        ids = pd.read_parquet(folder / CLIPS_FILE, columns=["clip_id"])["clip_id"].to_numpy(dtype=object)
        return ids, np.load(folder / "joint.npy")

    def past_assignments(self) -> list[str]:
        """Ids of the assignments kept in ``assignment_history/``."""
        folder = self.dir / HISTORY_DIR
        return sorted(p.name for p in folder.iterdir() if (p / "joint.npy").is_file()) if folder.is_dir() else []

    @cached_property
    def priors(self) -> np.ndarray:
        return np.load(self.dir / "priors.npy")

    @cached_property
    def catalog(self) -> pd.DataFrame:
        """The catalog rows of this run's clips, in run order (reads the catalog the run was made from)."""
        from selavi_core.catalog import load_catalog  # the previous stage; imported lazily to keep this module light

        cat = load_catalog(self.meta.catalog_dir).set_index("clip_id")
        missing = pd.Index(self.clip_ids).difference(cat.index)
        if len(missing):
            raise RunError(f"{len(missing)} clips of run {self.dir} are not in catalog {self.meta.catalog_dir}")
        return cat.loc[self.clip_ids].reset_index()

    @cached_property
    def ground_truth(self) -> tuple[np.ndarray, list[str]] | None:
        """(codes, class_names) with code -1 for clips without a label, or None when nothing is labelled."""
        labels = self.catalog["label"]
        if labels.isna().all():
            return None
        cat = pd.Categorical(labels)
        return np.asarray(cat.codes, dtype=np.int64), [str(c) for c in cat.categories]
