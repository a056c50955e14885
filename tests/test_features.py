"""selavi_core.features: the one audio-visual embedding and the one k-means (k-means++ seeded, spherical)."""

from __future__ import annotations

import numpy as np
import pytest

from selavi_core.evaluation.metrics import nmi
from selavi_core.features import av_concat, av_embedding, kmeans_labels, l2_normalise


def _blobs(n_per: int, k: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.eye(k, d)  # orthogonal: every pair of groups equally far apart
    y = np.repeat(np.arange(k), n_per)
    return (centres[y] + 0.05 * rng.normal(size=(len(y), d))).astype(np.float32), y


def test_l2_normalise_rows_and_zero_rows() -> None:
    x = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float16)
    out = l2_normalise(x)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]], rtol=1e-6)


def test_av_embedding_weighs_the_modalities_equally_whatever_their_scale() -> None:
    rng = np.random.default_rng(0)
    video = rng.normal(size=(50, 64)) * 1000.0  # a large-scale, wide modality
    audio = rng.normal(size=(50, 4)) * 0.001
    e = av_embedding(video, audio)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(e[:, :64], axis=1), np.sqrt(0.5), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(e[:, 64:], axis=1), np.sqrt(0.5), rtol=1e-5)
    np.testing.assert_allclose(av_concat(video, audio) / np.sqrt(2), e, rtol=1e-6)
    # the inner product of two clips is the mean of their two cosine similarities
    v, a = l2_normalise(video), l2_normalise(audio)
    np.testing.assert_allclose(e[0] @ e[1], (v[0] @ v[1] + a[0] @ a[1]) / 2, rtol=1e-4, atol=1e-6)


def test_kmeans_pp_separates_well_separated_groups_for_every_seed() -> None:
    # faiss's random seeding merges two of six blobs for most seeds; k-means++ must not
    x, y = _blobs(40, 6, 16, seed=4)
    for seed in range(4):
        pred = kmeans_labels(x, 6, seed=seed, niter=25, nredo=1, threads=1)
        assert pred.dtype == np.int64 and set(pred.tolist()) == set(range(6))
        assert nmi(y, pred) == pytest.approx(1.0)


def test_kmeans_is_deterministic_per_seed() -> None:
    x, _ = _blobs(30, 4, 8, seed=1)
    x += np.random.default_rng(2).normal(size=x.shape).astype(np.float32)  # overlapping groups
    assert np.array_equal(kmeans_labels(x, 4, seed=7), kmeans_labels(x, 4, seed=7))
