"""selavi_core.model.logmel.log_mel against python_speech_features 0.6 ``logfbank``, the function SeLaVi calls."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from python_speech_features import logfbank
from python_speech_features.base import get_filterbanks
from scipy.io import wavfile
from scipy.signal import resample_poly

from selavi_core.config import CPU_SMALL, PAPER, AudioSpec
from selavi_core.model.logmel import empty_filters, log_mel, mel_filterbank

TOL = 1e-3
SPECS = {"paper": PAPER.audio, "cpu-small": CPU_SMALL.audio}


def shared_data() -> Path:
    env = os.environ.get("SELAVI_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def reference(signal: np.ndarray, spec: AudioSpec) -> np.ndarray:
    """logfbank as SeLaVi calls it, transposed to our (n_mels, n_frames) layout."""
    feats = logfbank(
        signal,
        samplerate=spec.sample_rate,
        winlen=spec.win_s,
        winstep=spec.hop_s,
        nfilt=spec.n_mels,
        nfft=spec.n_fft,
        lowfreq=spec.low_hz,
        highfreq=spec.high_hz,
        preemph=spec.preemph,
    )
    return feats.T


def fsdd_windows(spec: AudioSpec, count: int = 8) -> list[np.ndarray]:
    """1 s windows of real FSDD speech (int16 magnitudes, float64), resampled from 8 kHz to the spec's rate."""
    rec = shared_data() / "fsdd" / "recordings"
    files = sorted(rec.glob("*.wav"))
    if not files:
        pytest.skip(f"FSDD recordings not found in {rec} (set SELAVI_SHARED_DATA to ../shared/data)")
    picked = [files[i] for i in np.linspace(0, len(files) - 1, count).astype(int)]  # digits and speakers vary
    out = []
    for path in picked:
        rate, pcm = wavfile.read(path)
        assert rate == 8000 and pcm.dtype == np.int16
        g = math.gcd(spec.sample_rate, rate)
        wave = resample_poly(pcm.astype(np.float64), spec.sample_rate // g, rate // g)
        wave = np.pad(wave, (0, max(0, spec.n_samples - len(wave))))[: spec.n_samples]
        out.append(wave)
    return out


@pytest.mark.parametrize("name", SPECS)
def test_filterbank_equals_get_filterbanks(name):
    spec = SPECS[name]
    ref = get_filterbanks(spec.n_mels, spec.n_fft, spec.sample_rate, spec.low_hz, spec.high_hz)
    ours = mel_filterbank(spec).numpy()
    assert ours.shape == (spec.n_mels, spec.n_fft // 2 + 1)
    np.testing.assert_array_equal(ours, ref)


def test_paper_spec_has_the_documented_empty_filters():
    # selavi-method.md §6.2: at 24 kHz, 38 of the 257 filters are empty; at 48 kHz, 56 are.
    assert empty_filters(PAPER.audio) == 38
    assert empty_filters(AudioSpec(sample_rate=48_000)) == 56


@pytest.mark.shared_data
@pytest.mark.parametrize("name", SPECS)
def test_matches_logfbank_on_real_speech(name):
    spec = SPECS[name]
    waves = fsdd_windows(spec)
    batch = torch.from_numpy(np.stack(waves))
    ours = log_mel(batch, spec, int16_scale=False).numpy()
    assert ours.dtype == np.float32
    assert ours.shape == (len(waves), 1, spec.n_mels, spec.n_frames)
    for wave, feats in zip(waves, ours, strict=True):
        ref = reference(wave, spec)
        assert np.abs(feats[0] - ref).max() <= TOL


@pytest.mark.parametrize("name", SPECS)
def test_matches_logfbank_on_white_noise(name):
    spec = SPECS[name]
    rng = np.random.default_rng(7)
    for amplitude in (1.0, 300.0, 10_000.0):
        wave = rng.standard_normal(spec.n_samples) * amplitude
        ours = log_mel(torch.from_numpy(wave), spec, int16_scale=False)[0, 0].numpy()
        assert np.abs(ours - reference(wave, spec)).max() <= TOL


def test_paper_shape_and_empty_filters_read_log_eps():
    spec = PAPER.audio
    wave = torch.from_numpy(np.random.default_rng(0).uniform(-0.5, 0.5, spec.n_samples))
    feats = log_mel(wave, spec)
    assert feats.shape == (1, 1, 257, 99)
    empty = mel_filterbank(spec).sum(1) == 0
    np.testing.assert_allclose(feats[0, 0, empty].numpy(), np.log(np.finfo(np.float64).eps), atol=1e-5)


def test_int16_scale_reproduces_raw_pcm_features():
    """A [-1, 1] float wave with int16_scale, the int16 PCM itself, and logfbank of the PCM all agree."""
    spec = PAPER.audio
    pcm = (np.random.default_rng(1).standard_normal(spec.n_samples) * 4000).clip(-32768, 32767).astype(np.int16)
    ref = reference(pcm.astype(np.float64), spec)
    from_float = log_mel(torch.from_numpy(pcm.astype(np.float64) / 32768.0), spec)[0, 0].numpy()
    from_int = log_mel(torch.from_numpy(pcm), spec)[0, 0].numpy()
    assert np.abs(from_float - ref).max() <= TOL
    assert np.abs(from_int - ref).max() <= TOL
    unscaled = log_mel(torch.from_numpy(pcm.astype(np.float64) / 32768.0), spec, int16_scale=False)[0, 0].numpy()
    assert np.abs(unscaled - ref).max() > 1.0  # the scale matters: 2 ln 32768 ≈ 20.8 on non-empty bands


def test_batched_equals_per_example():
    spec = PAPER.audio
    rng = np.random.default_rng(2)
    batch = torch.from_numpy(rng.standard_normal((11, spec.n_samples)) * 0.1)  # crosses the CPU chunk size
    together = log_mel(batch, spec)
    for i in range(batch.shape[0]):
        torch.testing.assert_close(together[i : i + 1], log_mel(batch[i], spec), rtol=0, atol=1e-5)


@pytest.mark.parametrize("n_samples", [100, 480, 481, 24_000 + 137, 2 * 24_000])
def test_framing_of_odd_lengths_matches_framesig(n_samples):
    """Short signals give one zero-padded frame; others 1 + ceil((len - win) / hop) frames, tail zero-padded."""
    spec = PAPER.audio
    wave = np.random.default_rng(n_samples).standard_normal(n_samples) * 1000
    ours = log_mel(torch.from_numpy(wave), spec, int16_scale=False)[0, 0].numpy()
    ref = reference(wave, spec)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= TOL


def test_silence_is_log_eps_everywhere():
    spec = CPU_SMALL.audio
    feats = log_mel(torch.zeros(2, spec.n_samples), spec)
    np.testing.assert_allclose(feats.numpy(), np.log(np.finfo(np.float64).eps), atol=1e-5)
    np.testing.assert_allclose(feats[0, 0].numpy(), reference(np.zeros(spec.n_samples), spec), atol=1e-5)


@pytest.mark.parametrize("name", SPECS)
def test_banded_cpu_product_equals_the_dense_filterbank_product(name):
    """The CPU's banded blocks and the single matmul used on accelerators give the same energies."""
    from selavi_core.model.logmel import _filter_energies

    spec = SPECS[name]
    sq = torch.rand(3, 7, spec.n_fft // 2 + 1, dtype=torch.float64) * 1e6
    gain = 32768.0**2 / spec.n_fft
    banded = _filter_energies(sq, spec, gain, banded=True)
    dense = _filter_energies(sq, spec, gain, banded=False)
    torch.testing.assert_close(banded, dense, rtol=1e-12, atol=0)
    torch.testing.assert_close(dense, sq @ mel_filterbank(spec).T * gain, rtol=1e-12, atol=0)


def test_float32_is_available_but_float64_is_the_exact_default():
    spec = PAPER.audio
    wave = torch.from_numpy(np.random.default_rng(3).standard_normal(spec.n_samples) * 0.1)
    exact = log_mel(wave, spec)
    single = log_mel(wave, spec, dtype=torch.float32)
    assert exact.dtype == single.dtype == torch.float32
    assert (exact - single).abs().max() < 1e-2  # close on noise; speech needs float64 (see the module docstring)
