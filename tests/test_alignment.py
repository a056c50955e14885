"""Modality alignment (selavi-method.md §3.2): cost matrix, local search, and the permuted audio Linear."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from selavi_core.selflabel.alignment import (
    align_permutation,
    alignment_cost,
    apply_permutation_to_linear,
    l1_cost_matrix,
)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _planted(n: int, k: int, seed: int, signal: float = 3.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Video and audio posteriors of the same hidden clusters; audio's columns are shuffled by ``planted``.

    ``p_audio[:, planted[k]]`` is the audio posterior of hidden cluster k, so ``planted`` is the
    permutation that ``align_permutation`` should return.
    """
    rng = np.random.default_rng(seed)
    z = rng.integers(0, k, n)
    onehot = np.eye(k)[z]
    p_video = _softmax(signal * onehot + rng.normal(size=(n, k)))
    aligned = _softmax(signal * onehot + rng.normal(size=(n, k)))
    planted = rng.permutation(k)
    p_audio = np.empty_like(aligned)
    p_audio[:, planted] = aligned
    return p_video, p_audio, planted


def test_cost_matrix_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    # N not a multiple of the kernel's row block, K not a multiple of its 4-column register block
    pv = _softmax(rng.normal(size=(2_500, 7)))
    pa = _softmax(rng.normal(size=(2_500, 7)))
    brute = np.abs(pv[:, :, None] - pa[:, None, :]).sum(axis=0)
    np.testing.assert_allclose(l1_cost_matrix(pv, pa), brute, rtol=1e-5)
    np.testing.assert_allclose(l1_cost_matrix(pv.astype(np.float32), pa.astype(np.float32)), brute, rtol=1e-5)
    np.testing.assert_allclose(l1_cost_matrix(torch.from_numpy(pv), pa[::1]), brute, rtol=1e-5)
    perm = rng.permutation(7)
    assert alignment_cost(pv, pa, perm) == pytest.approx(np.abs(pv - pa[:, perm]).sum(), rel=1e-12)


@pytest.mark.parametrize(("n", "k", "seed"), [(3_000, 12, 1), (4_000, 30, 2)])
def test_recovers_planted_permutation(n: int, k: int, seed: int) -> None:
    p_video, p_audio, planted = _planted(n, k, seed)
    perm, cost = align_permutation(p_video, p_audio, rng=seed)
    np.testing.assert_array_equal(perm, planted)
    assert cost == pytest.approx(alignment_cost(p_video, p_audio, planted), rel=1e-12)
    assert cost < alignment_cost(p_video, p_audio, np.arange(k))


def test_cost_never_increases_and_ends_in_a_local_optimum() -> None:
    rng = np.random.default_rng(5)
    k = 8
    p_video = _softmax(rng.normal(size=(1_500, k)))  # no planted structure: many local optima
    p_audio = _softmax(rng.normal(size=(1_500, k)))
    perm, cost, info = align_permutation(p_video, p_audio, rng=11, restarts=3, return_info=True)
    assert len(info["searches"]) == 3
    for trace in info["traces"]:
        assert np.all(np.diff(trace) < 0)
        if trace.size:
            assert trace[0] < info["identity_cost"]
    assert cost <= info["identity_cost"]
    assert cost == pytest.approx(min(s["cost"] for s in info["searches"]), rel=1e-6)
    # patience 1000 over 28 pairs leaves essentially no improving swap unproposed: check all of them
    for a, b in itertools.combinations(range(k), 2):
        swapped = perm.copy()
        swapped[[a, b]] = swapped[[b, a]]
        assert alignment_cost(p_video, p_audio, swapped) >= cost * (1 - 1e-9)


def test_stops_at_max_proposals_and_patience() -> None:
    p_video, p_audio, _ = _planted(500, 20, 3)
    _, _, info = align_permutation(p_video, p_audio, max_proposals=50, rng=0, return_info=True)
    assert all(s["proposals"] == 50 for s in info["searches"])
    _, _, info = align_permutation(p_video, p_video, patience=7, rng=0, return_info=True)
    # identical posteriors: the identity is optimal, so each search stops after exactly `patience` proposals
    assert [s["proposals"] for s in info["searches"]] == [7, 7]
    assert [s["accepted"] for s in info["searches"]] == [0, 0]


@pytest.mark.parametrize("bias", [True, False])
def test_permuted_linear_reproduces_permuted_outputs(bias: bool) -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(16, 9, bias=bias)
    x = torch.randn(32, 16)
    before = linear(x).detach()
    perm = np.random.default_rng(1).permutation(9)
    returned = apply_permutation_to_linear(linear, perm)
    assert returned is linear
    after = linear(x).detach()
    torch.testing.assert_close(after, before[:, torch.as_tensor(perm)])
    assert not linear.weight.requires_grad or linear.weight.grad is None


def test_aligned_audio_head_matches_video_head() -> None:
    """End to end: posteriors of two Linear heads, align, apply, and the audio head now emits aligned columns."""
    torch.manual_seed(1)
    video_head = torch.nn.Linear(10, 6)
    audio_head = torch.nn.Linear(10, 6)
    with torch.no_grad():
        shuffle = torch.randperm(6)
        audio_head.weight.copy_(video_head.weight[shuffle] + 0.02 * torch.randn(6, 10))
        audio_head.bias.copy_(video_head.bias[shuffle])
    x = torch.randn(2_000, 10) * 3
    p_video = torch.softmax(video_head(x), dim=1).detach().double().numpy()
    p_audio = torch.softmax(audio_head(x), dim=1).detach().double().numpy()
    perm, _ = align_permutation(p_video, p_audio, rng=0)
    # audio output k is (nearly) video output shuffle[k], so video column k sits in audio column argsort(shuffle)[k]
    np.testing.assert_array_equal(perm, torch.argsort(shuffle).numpy())
    apply_permutation_to_linear(audio_head, perm)
    p_aligned = torch.softmax(audio_head(x), dim=1).detach().double().numpy()
    np.testing.assert_allclose(p_aligned, p_audio[:, perm], atol=1e-6)
    assert (p_aligned.argmax(1) == p_video.argmax(1)).mean() > 0.9  # same cluster for most inputs


def test_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError):
        apply_permutation_to_linear(torch.nn.Linear(4, 3), [0, 0, 1])
    with pytest.raises(ValueError):
        align_permutation(np.ones((5, 3)) / 3, np.ones((5, 4)) / 4)
