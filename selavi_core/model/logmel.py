"""SeLaVi's audio front end: python_speech_features 0.6 ``logfbank``, reproduced in torch.

SeLaVi computes a 257-band log-mel of 1 s of 24 kHz audio with ``logfbank`` (../shared/docs/selavi-method.md
§6.2). A model trained on those features (including the official checkpoints) only works on features that
match them, so this module reproduces every quirk of that function rather than a "nicer" mel spectrogram:

- pre-emphasis ``y[0] = x[0]``, ``y[n] = x[n] - 0.97 x[n-1]``;
- framing like ``sigproc.framesig``: ``1 + ceil((len - frame_len) / step)`` frames (one frame when the
  signal is not longer than a frame), the tail zero-padded, a rectangular window;
- power spectrum ``|rfft(frame, nfft)|^2 / nfft`` (frames longer than ``nfft`` are truncated, shorter ones
  zero-padded, exactly as ``numpy.fft.rfft(frames, nfft)`` does);
- triangular filters on FFT bins ``floor((nfft + 1) * hz / sr)`` of mel points spaced linearly between the low
  and high mel. That coarse binning leaves some filters empty (38 of 257 at 24 kHz with nfft 1024); their
  energy is 0, replaced like every zero energy by numpy's float64 machine epsilon, so they read ln(eps) ≈ -36.04;
- natural log.

Input scale: SeLaVi decodes to signed 16-bit PCM and feeds the raw int16 magnitudes (not [-1, 1]). With
``int16_scale=True`` (the default) a floating-point wave in [-1, 1] is multiplied by 32768 first, so the
features equal the official ones; integer tensors are taken as raw PCM values and never rescaled.

Precision: the computation runs in float64 by default. Speech upsampled from 8 kHz has almost no energy above
4 kHz, and in float32 the FFT's rounding noise (about 1e-7 of the frame's peak amplitude) dominates those bands:
on 300 FSDD windows float32 is off by up to 0.29 (float64: 2e-6, the float32 rounding of the output), against
the 1e-3 the reference comparison allows. float64 costs about a millisecond per second of audio on a CPU.
On MPS, which has no float64, the default is float32.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from selavi_core.config import AudioSpec

#: The scale of signed 16-bit PCM: a [-1, 1] float wave times this gives SeLaVi's raw int16 magnitudes.
INT16_SCALE = 32768.0

#: What logfbank puts in place of a zero energy before the log (numpy's float64 epsilon, whatever our dtype).
ZERO_ENERGY = float(np.finfo(np.float64).eps)


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK-style mel scale, the formula logfbank uses."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def filter_bins(spec: AudioSpec) -> np.ndarray:
    """The ``n_mels + 2`` FFT bin edges of the triangles, computed in float64 numpy like the library.

    The floor of ``(nfft + 1) * hz / sr`` is sensitive to the last bit of ``hz``, so the mel points are computed
    with the very same numpy operations (linspace in mel, the same conversion formulas) as the reference.
    """
    high = spec.high_hz or spec.sample_rate / 2  # logfbank treats 0 like None: Nyquist
    if high > spec.sample_rate / 2:
        raise ValueError(f"high_hz {high} is above the Nyquist frequency {spec.sample_rate / 2}")
    mel_points = np.linspace(hz_to_mel(spec.low_hz), hz_to_mel(high), spec.n_mels + 2)
    return np.floor((spec.n_fft + 1) * mel_to_hz(mel_points) / spec.sample_rate)


def mel_filterbank_numpy(spec: AudioSpec) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) float64 triangles, equal to python_speech_features' ``get_filterbanks``.

    Filter j rises over bins [b_j, b_{j+1}) from 0 and falls over [b_{j+1}, b_{j+2}) from 1. When two edges
    share a bin the corresponding half is empty; when all three do the filter is all zeros.
    """
    bins = filter_bins(spec)
    n_bins = spec.n_fft // 2 + 1
    idx = np.arange(n_bins, dtype=np.float64)
    lo, mid, hi = bins[:-2, None], bins[1:-1, None], bins[2:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        rising = np.where((idx >= lo) & (idx < mid), (idx - lo) / (mid - lo), 0.0)
        falling = np.where((idx >= mid) & (idx < hi), (hi - idx) / (hi - mid), 0.0)
    return rising + falling  # the two halves never overlap: [lo, mid) and [mid, hi)


@lru_cache(maxsize=32)
def _filterbank_cached(spec: AudioSpec, device: str, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(mel_filterbank_numpy(spec)).to(device=device, dtype=dtype)


def mel_filterbank(
    spec: AudioSpec, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters exactly as logfbank builds them (cached per spec/device/dtype)."""
    return _filterbank_cached(spec, str(torch.device(device)), dtype)


#: Filters per block of the banded CPU product (see ``_filter_blocks``).
_FILTER_BLOCK = 32
#: Examples per chunk on the CPU: keeps a chunk's spectra in cache (one big batch is 2-3x slower per example).
_CPU_CHUNK = 4


@lru_cache(maxsize=32)
def _filter_blocks(
    spec: AudioSpec, dtype: torch.dtype, gain: float
) -> tuple[tuple[int, int, int, int, torch.Tensor | None], ...]:
    """The filterbank times ``gain``, cut into blocks of consecutive filters with only the FFT bins they touch.

    Each filter covers a handful of bins, so the dense (bins x filters) product is ~99 % multiplications by
    zero. Multiplying each block of 32 filters by its contiguous range of bins is the same sum of the same
    non-zero products (only their order differs) at a seventh of the cost on a CPU.
    Entries are (first filter, end filter, first bin, end bin, weights (bins, filters) or None when empty).
    """
    fb = torch.from_numpy(mel_filterbank_numpy(spec) * gain).to(dtype)
    blocks: list[tuple[int, int, int, int, torch.Tensor | None]] = []
    for start in range(0, fb.shape[0], _FILTER_BLOCK):
        sub = fb[start : start + _FILTER_BLOCK]
        used = torch.nonzero(sub.abs().sum(0)).flatten()
        if len(used) == 0:  # every filter of the block is empty: energy 0
            blocks.append((start, start + sub.shape[0], 0, 0, None))
            continue
        lo, hi = int(used[0]), int(used[-1]) + 1
        blocks.append((start, start + sub.shape[0], lo, hi, sub[:, lo:hi].T.contiguous()))
    return tuple(blocks)


def _filter_energies(
    sq_magnitude: torch.Tensor, spec: AudioSpec, gain: float, banded: bool | None = None
) -> torch.Tensor:
    """(..., bins) |X|^2 -> (..., n_mels) filter energies of ``gain * |X|^2``.

    ``gain`` (the 1/nfft of the power spectrum and the square of the input scale) is folded into the weights:
    one pass less over the spectra, and exact when it is a power of two (1/1024 * 32768^2 = 2^20).
    Banded blocks on the CPU (``banded=None``), one dense matmul on other devices (one kernel beats many there).
    """
    if banded is None:
        banded = sq_magnitude.device.type == "cpu"
    if not banded:
        fb = mel_filterbank(spec, device=sq_magnitude.device, dtype=sq_magnitude.dtype)
        return sq_magnitude @ (fb.T * gain)
    out = sq_magnitude.new_empty(sq_magnitude.shape[:-1] + (spec.n_mels,))
    for start, stop, lo, hi, weights in _filter_blocks(spec, sq_magnitude.dtype, gain):
        if weights is None:
            out[..., start:stop] = 0
        else:
            torch.matmul(sq_magnitude[..., lo:hi], weights, out=out[..., start:stop])
    return out


def empty_filters(spec: AudioSpec) -> int:
    """How many filters the coarse FFT binning leaves without a single non-zero weight."""
    return int((mel_filterbank_numpy(spec).max(axis=1) == 0).sum())


def frame_count(n_samples: int, spec: AudioSpec) -> int:
    """Frames ``framesig`` makes of ``n_samples`` samples: ``1 + ceil((n - win) / hop)``, at least one."""
    win, hop = spec.win_length, spec.hop_length
    if n_samples <= win:
        return 1
    return 1 + -(-(n_samples - win) // hop)


def log_mel(
    wave: torch.Tensor | np.ndarray,
    spec: AudioSpec,
    *,
    int16_scale: bool = True,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """SeLaVi's log-mel features of one wave ``(S,)`` or a batch ``(B, S)``: ``(B, 1, n_mels, n_frames)`` float32.

    Runs on ``wave``'s device. ``int16_scale`` multiplies a floating-point wave by 32768 (see the module
    docstring); integer input is raw PCM and used as is. ``dtype`` is the internal precision: float64 by
    default (float32 on Apple's MPS, which has no float64).
    """
    x = torch.as_tensor(wave)
    if dtype is None:
        dtype = torch.float32 if x.device.type == "mps" else torch.float64
    if x.ndim == 1:
        x = x.unsqueeze(0)
    if x.ndim != 2:
        raise ValueError(f"wave must have shape (S,) or (B, S), not {tuple(x.shape)}")
    if x.shape[1] == 0:
        raise ValueError("wave is empty")
    scale = INT16_SCALE if (int16_scale and x.is_floating_point()) else 1.0
    if x.device.type == "cpu" and x.shape[0] > _CPU_CHUNK:
        chunks = [_log_mel_batch(c, spec, scale, dtype) for c in x.split(_CPU_CHUNK)]
        return torch.cat(chunks)
    return _log_mel_batch(x, spec, scale, dtype)


def _log_mel_batch(x: torch.Tensor, spec: AudioSpec, scale: float, dtype: torch.dtype) -> torch.Tensor:
    # The input scale is applied as scale^2 on the energies (folded into the filter weights, see
    # _filter_energies): every step before is linear in x, so this is the same number up to rounding.
    x = x.to(dtype)

    # Pre-emphasis keeps the first sample: y = [x0, x1 - a x0, x2 - a x1, ...].
    if spec.preemph:
        x = torch.cat([x[:, :1], x[:, 1:] - spec.preemph * x[:, :-1]], dim=1)

    # framesig: zero-pad the tail so that the last frame is complete, then a strided view of the frames.
    win, hop = spec.win_length, spec.hop_length
    n_frames = frame_count(x.shape[1], spec)
    padded_len = (n_frames - 1) * hop + win
    if padded_len > x.shape[1]:
        x = torch.nn.functional.pad(x, (0, padded_len - x.shape[1]))
    frames = x.unfold(1, win, hop)  # (B, T, win), rectangular window

    # rfft with n = nfft zero-pads or truncates each frame, like numpy.fft.rfft(frames, nfft).
    spectrum = torch.fft.rfft(frames, n=spec.n_fft, dim=-1)
    re, im = spectrum.real, spectrum.imag
    sq_magnitude = (re * re).addcmul_(im, im)  # (B, T, nfft//2+1); power = this / nfft

    energy = _filter_energies(sq_magnitude, spec, scale * scale / spec.n_fft)  # (B, T, n_mels)
    energy.masked_fill_(energy == 0, ZERO_ENERGY)
    return energy.log_().transpose(1, 2).unsqueeze(1).to(torch.float32).contiguous()
