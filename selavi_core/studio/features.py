"""Clip features for the map and for "similar clips", read in chunks from the run's float16 arrays.

``both`` is the audio-visual embedding the Studio uses by default (``selavi_core.features.av_embedding``):
each modality's feature is L2-normalised and the two are concatenated and scaled by 1/sqrt(2), so the
inner product of two clips is the mean of their video and audio cosine similarities (neither modality
dominates because of its feature scale).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from selavi_core.features import av_embedding, l2_normalise
from selavi_core.runs.run import Run

FEATURE_KINDS = ("both", "video", "audio")
CHUNK = 16_384


def feature_dim(run: Run, kind: str = "both") -> int:
    if kind == "both":
        return int(run.features("video").shape[1] + run.features("audio").shape[1])
    return int(run.features(kind).shape[1])


def embed(run: Run, rows: np.ndarray | slice, kind: str = "both") -> np.ndarray:
    """float32 (n, D) unit-norm embeddings of some rows (``rows`` indexes the run's clips)."""
    if kind not in FEATURE_KINDS:
        raise ValueError(f"kind must be one of {FEATURE_KINDS}")
    if kind != "both":
        return l2_normalise(run.features(kind)[rows])
    return av_embedding(run.features("video")[rows], run.features("audio")[rows])


def embed_chunks(
    run: Run, rows: np.ndarray | None = None, kind: str = "both", chunk: int = CHUNK
) -> Iterator[tuple[int, np.ndarray]]:
    """(offset, embeddings) for consecutive chunks of ``rows`` (all clips when None), bounded memory."""
    n = run.n_clips if rows is None else len(rows)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        sel = slice(start, stop) if rows is None else np.asarray(rows[start:stop])
        yield start, embed(run, sel, kind)
