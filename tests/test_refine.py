"""Refining the heads on frozen features (selavi_core.training.refine)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selavi_core.config import CPU_SMALL, RefineSpec, SinkhornSpec
from selavi_core.errors import SelaviError
from selavi_core.evaluation.metrics import nmi
from selavi_core.model.inference import predictions
from selavi_core.model.networks import build_model
from selavi_core.training.refine import fit_heads, refine_heads

K, N, DIM = 4, 400, 16
SMALL = CPU_SMALL.with_overrides(
    model={"video_widths": (8, 8, 16, DIM), "audio_widths": (8, 8, 16, DIM), "heads": 3, "clusters": K}
)


def blobs(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two views of the same K classes: each modality has its own class centres and noise."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(K), N // K)
    views = []
    for _ in range(2):
        centres = rng.normal(0, 1, (K, DIM)) * 2.0
        views.append((centres[y] + rng.normal(0, 1, (N, DIM))).astype(np.float32))
    return views[0], views[1], y


def uniform(h: int, mass: np.ndarray) -> np.ndarray:
    return np.full(K, 1.0 / K)


def refine_on(model, fv: np.ndarray, fa: np.ndarray, truth: np.ndarray, seed: int = 0, **spec) -> list[dict]:
    """``refine_heads`` on the CPU towards equal sizes, with ``RefineSpec(**spec)``; its per-round records."""
    return refine_heads(
        model,
        fv,
        fa,
        spec=RefineSpec(**spec),
        sinkhorn=SinkhornSpec(),
        marginal=uniform,
        device=torch.device("cpu"),
        seed=seed,
        truth=truth,
        log=lambda s: None,
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_refining_random_heads_finds_the_classes_both_views_share(seed: int):
    torch.manual_seed(seed)
    model = build_model(SMALL, K)
    fv, fa, y = blobs(seed)
    encoders = {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith("mlp_")}
    before = predictions(model, fv, fa, torch.device("cpu"))["joint"]
    records = refine_on(model, fv, fa, y, seed=seed, rounds=15, audio_weight=0.5)
    after = predictions(model, fv, fa, torch.device("cpu"))["joint"]
    scores_before = [nmi(y, before[:, h]) for h in range(3)]
    scores_after = [nmi(y, after[:, h]) for h in range(3)]
    assert max(scores_before) < 0.6
    # every head improves; most find the classes exactly, one may settle in a merge-and-split optimum
    assert all(a > b + 0.3 for a, b in zip(scores_after, scores_before, strict=True))
    assert max(scores_after) > 0.97 and min(scores_after) > 0.75
    assert [r["refine_round"] for r in records] == list(range(1, 16))
    assert records[-1]["nmi_gt_best"] > 0.97 and records[-1]["stability_nmi"] > 0.9
    for n, p in model.named_parameters():  # the encoders are frozen
        if n in encoders:
            assert torch.equal(p, encoders[n])
    assert not model.training


def test_the_audio_weight_decides_whose_structure_the_labels_follow():
    """Video and audio disagree on the partition: at weight 0 the labels follow the video's, at 1 the audio's."""
    rng = np.random.default_rng(3)
    y_v = np.repeat(np.arange(K), N // K)
    y_a = rng.permutation(y_v)  # an independent partition carried only by the sound
    fv = (rng.normal(0, 1, (K, DIM)) * 3.0)[y_v] + rng.normal(0, 1, (N, DIM))
    fa = (rng.normal(0, 1, (K, DIM)) * 3.0)[y_a] + rng.normal(0, 1, (N, DIM))
    follows = {}
    for w in (0.0, 1.0):
        torch.manual_seed(0)
        model = build_model(SMALL, K)
        records = refine_on(model, fv.astype(np.float32), fa.astype(np.float32), y_v, rounds=10, audio_weight=w)
        follows[w] = records[-1]["nmi_gt_best"]
    assert follows[0.0] > 0.9 and follows[1.0] < 0.1


def test_a_weaker_size_pull_lets_the_labels_keep_an_imbalanced_class():
    """Heads that already separate classes of 200/100/60/40 clips: under equal target sizes held exactly
    (strength 1) every labelling cuts the 200-clip class to a quarter of the clips; with ``marginal_strength``
    0.5 the labels keep it whole."""
    rng = np.random.default_rng(5)
    y = np.repeat(np.arange(K), [200, 100, 60, 40])
    views = [((rng.normal(0, 1, (K, DIM)) * 2.0)[y] + rng.normal(0, 1, (N, DIM))).astype(np.float32) for _ in "va"]
    tv, ta = (torch.from_numpy(v) for v in views)
    largest = {}
    for strength in (1.0, 0.5):
        torch.manual_seed(0)
        model = build_model(SMALL, K)
        optimizer = torch.optim.Adam(list(model.head_parameters()), lr=1e-3)
        fit_heads(model, tv, ta, torch.from_numpy(np.repeat(y[:, None], 3, axis=1)), optimizer, 30, 64,
                  np.random.default_rng(0))  # fmt: skip
        records = refine_on(model, *views, y, rounds=3, audio_weight=0.5, marginal_strength=strength)
        largest[strength] = [r["largest_share"] for r in records]
        assert records[-1]["nmi_gt_best"] > (0.9 if strength < 1 else 0.6)
    assert all(abs(share - 0.25) < 0.02 for share in largest[1.0]), largest
    assert all(0.47 < share < 0.53 for share in largest[0.5]), largest


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rounds": -1}, r"refine.rounds must be >= 0, got -1"),
        ({"epochs": 0}, r"refine.epochs must be >= 1, got 0"),
        ({"audio_weight": 1.5}, r"refine.audio_weight must lie in \[0, 1\], got 1.5"),
        ({"lr": 0.0}, r"refine.lr must be positive, got 0.0"),
        ({"target": "zipf"}, r"refine.target must be one of prior, uniform, got 'zipf'"),
        ({"marginal_strength": 0.0}, r"refine.marginal_strength must lie in \(0, 1\], got 0.0"),
        ({"marginal_strength": 1.2}, r"refine.marginal_strength must lie in \(0, 1\], got 1.2"),
    ],
)
def test_bad_refine_settings_are_refused_with_the_field_named(change: dict, message: str):
    from dataclasses import replace

    with pytest.raises(SelaviError, match=message):
        replace(RefineSpec(), **change).validate()
