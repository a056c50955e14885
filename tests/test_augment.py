"""Training augmentations of selavi_core.training.batches on synthetic inputs whose correct output is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selavi_core.training.batches import (
    colour_augment,
    random_resized_crops,
    spec_augment,
    spectrogram_warp,
    standardise_clips,
    time_roll,
)


def bar_clips(b: int, size: int = 48, frames: int = 2) -> torch.Tensor:
    """(B,T,3,S,S) clips of a bright horizontal bar through the centre on black."""
    x = torch.zeros(b, frames, 3, size, size)
    x[..., size // 2 - 2 : size // 2 + 2, 6 : size - 6] = 1.0
    return x


def orientation_deg(img: np.ndarray) -> float:
    """Principal-axis angle of the bright pixels of a 2-D image, in degrees in (-90, 90]."""
    ys, xs = np.nonzero(img > 0.5)
    cov = np.cov(np.stack([xs - xs.mean(), ys - ys.mean()]))
    evals, evecs = np.linalg.eigh(cov)
    vx, vy = evecs[:, np.argmax(evals)]
    angle = np.degrees(np.arctan2(vy, vx))
    return float((angle + 90) % 180 - 90)


def test_crop_without_jitter_keeps_the_bar_horizontal_and_whole_clips_consistent() -> None:
    x = bar_clips(16)
    out = random_resized_crops(x, 40, (48, 48), np.random.default_rng(0))
    assert out.shape == (16, 2, 3, 40, 40)
    for clip in out.numpy():
        assert abs(orientation_deg(clip[0, 0])) < 2.0
        np.testing.assert_allclose(clip[0], clip[1])  # one map per clip, the same for all its frames


def test_rotation_stays_within_its_bound_and_is_used() -> None:
    x = bar_clips(64)
    out = random_resized_crops(x, 40, (48, 48), np.random.default_rng(1), max_rotate_deg=30.0)
    angles = np.array([orientation_deg(clip[0, 0]) for clip in out.numpy()])
    assert np.abs(angles).max() <= 32.0
    assert np.abs(angles).max() >= 15.0 and (angles > 5).any() and (angles < -5).any()


def test_shear_tilts_a_vertical_bar() -> None:
    x = bar_clips(64).transpose(-1, -2)  # vertical bar
    out = random_resized_crops(x, 40, (48, 48), np.random.default_rng(2), max_shear=0.5)
    tilt = np.array([90 - abs(orientation_deg(clip[0, 0])) for clip in out.numpy()])  # 0 = still vertical
    assert tilt.max() > 10.0 and tilt.max() <= np.degrees(np.arctan(0.5)) + 2.0


def test_colour_augment_keeps_the_shape_and_the_value_range() -> None:
    x = bar_clips(32) * 0.8 + 0.1
    out = colour_augment(x, np.random.default_rng(3))
    assert out.min() >= 0.0 and out.max() <= 1.0
    bar = x[:, :, 0] > 0.5
    for clip, mask in zip(out, bar, strict=True):
        luma = clip.mean(dim=1)  # (T,S,S)
        inside, outside = luma[mask].mean(), luma[~mask].mean()
        assert abs(float(inside - outside)) > 0.05  # the bar still stands out (brighter or darker)
    colours = out[:, 0, :, 24, 24]  # a bar pixel of each clip
    assert colours.std(dim=0).min() > 0.05  # and its colour differs between clips


def test_standardise_gives_one_input_for_any_colours_and_polarity() -> None:
    """The same bar in random colours, light on dark or dark on light, becomes one canonical clip."""
    bar = bar_clips(1)[0, :, 0] > 0.5  # (T,S,S)
    rng = np.random.default_rng(4)
    clips = []
    for i in range(6):
        light, dark = rng.uniform(0.6, 1.0, 3), rng.uniform(0.0, 0.3, 3)
        fg, bg = (light, dark) if i % 2 else (dark, light)
        fg, bg = torch.from_numpy(fg).float(), torch.from_numpy(bg).float()
        clips.append(torch.where(bar[:, None], fg.view(1, 3, 1, 1), bg.view(1, 3, 1, 1)))
    out = standardise_clips(torch.stack(clips))
    assert out.shape == (6, 2, 3, 48, 48)
    for clip in out:
        torch.testing.assert_close(clip, out[0], atol=2e-3, rtol=5e-3)  # colours and polarity are gone
        assert float(clip.mean()) == pytest.approx(0.0, abs=1e-5)
        assert float(clip[:, 0].std()) == pytest.approx(1.0, rel=0.01)
    assert bool((out[0, :, 0][bar] > 0).all())  # the sparse bar is the positive side
    assert bool((out[0, :, 0][~bar] < 0).all())


def test_standardise_keeps_a_flat_clip_finite() -> None:
    out = standardise_clips(torch.full((2, 2, 3, 8, 8), 0.3))
    assert torch.isfinite(out).all() and float(out.abs().max()) < 1e-3


def band_spectrogram(b: int, f: int = 40, t: int = 199) -> torch.Tensor:
    """(B,1,F,T) log-mels with one loud band (rows 19-21) from frame 80 to 120 on a silent floor."""
    spec = torch.full((b, 1, f, t), -30.0)
    spec[:, 0, 19:22, 80:120] = 10.0
    return spec


def test_spectrogram_warp_moves_and_stretches_within_bounds() -> None:
    spec = band_spectrogram(64)
    out = spectrogram_warp(spec, np.random.default_rng(4), max_time_stretch=0.2, max_freq_warp=0.1)
    assert out.shape == spec.shape and torch.isfinite(out).all()
    rows = out[:, 0].amax(dim=2).argmax(dim=1).numpy()  # loudest band of each example
    assert np.abs(rows - 20).max() <= 5 and len(np.unique(rows)) >= 3
    lengths = (out[:, 0].amax(dim=1) > -10.0).sum(dim=1).numpy()  # loud frames
    assert lengths.min() >= 40 * 0.8 - 2 and lengths.max() <= 40 * 1.2 + 2
    assert lengths.max() - lengths.min() >= 6


def test_spectrogram_warp_of_zero_is_the_identity() -> None:
    spec = band_spectrogram(4) + torch.randn(4, 1, 40, 199)
    out = spectrogram_warp(spec, np.random.default_rng(5), 0.0, 0.0)
    torch.testing.assert_close(out, spec, atol=1e-4, rtol=0)


def test_time_roll_moves_the_sound_and_keeps_every_frame() -> None:
    spec = band_spectrogram(64) + torch.randn(64, 1, 40, 199)
    out = time_roll(spec, np.random.default_rng(7))
    assert out.shape == spec.shape
    for i in range(8):  # each example is its input rolled circularly by some number of frames
        assert any(torch.equal(out[i], torch.roll(spec[i], k, dims=-1)) for k in range(199))
    onsets = (out[:, 0, 20] > 0).float().argmax(dim=1).numpy()  # first loud frame (or the wrapped tail)
    assert len(np.unique(onsets)) >= 40  # positions spread over the window: onset is no longer a fingerprint


def test_spec_augment_masks_at_most_its_share() -> None:
    spec = band_spectrogram(32) + torch.randn(32, 1, 40, 199)
    out = spec_augment(spec, np.random.default_rng(6))
    changed = (out != spec)[:, 0]
    rows_masked = changed.all(dim=2).sum(dim=1)
    cols_masked = changed.all(dim=1).sum(dim=1)
    assert rows_masked.max() <= int(40 * 0.15) and cols_masked.max() <= int(199 * 0.15)
    assert changed.any(dim=(1, 2)).float().mean() > 0.5


@pytest.mark.parametrize("seed", [0, 1])
def test_augmentations_are_reproducible_for_a_seed(seed: int) -> None:
    x = bar_clips(4)
    a = random_resized_crops(x, 40, (42, 52), np.random.default_rng(seed), max_rotate_deg=20, max_shear=0.2)
    b = random_resized_crops(x, 40, (42, 52), np.random.default_rng(seed), max_rotate_deg=20, max_shear=0.2)
    torch.testing.assert_close(a, b)
