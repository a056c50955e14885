"""Batches of network inputs from the clip cache, with SeLaVi's training augmentations.

A batch is assembled with vectorised torch ops, in the training process or in DataLoader workers
(``selavi_core.training.loader``; cpu-small stays in-process: on two cores workers would take their
CPU from the model). The augmentations (``video_inputs``, ``wave_log_mels``, ``augment_spectrogram``)
are shared with batches decoded from the original files (``selavi_core.training.windows``).
Training samples a random 1 s window, a random rescale and crop, a flip and (for data sets whose
clips carry per-clip colours, such as AV digits) colour augmentation; evaluation takes the
temporally centred window and the centre crop, as the official evaluation does.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from selavi_core.config import AudioSpec, Preset, VideoSpec
from selavi_core.model.logmel import log_mel
from selavi_core.training.clip_cache import ClipCache


class BatchMaker:
    """Turns cache rows into (video (B,3,T,crop,crop) float, log-mel (B,1,F,T') float) tensors."""

    def __init__(self, cache: ClipCache, preset: Preset):
        self.cache, self.preset = cache, preset
        self.v, self.a = preset.video, preset.audio
        self.window_frames = self.v.seconds * cache.fps  # cache frames in one clip window
        self.window_samples = self.a.n_samples

    def _starts(self, rows: np.ndarray, train: bool, rng: np.random.Generator) -> np.ndarray:
        """Window start in seconds: random when training, centred for evaluation."""
        dur = self.cache.n_frames[rows] / self.cache.fps
        slack = np.maximum(dur - self.v.seconds, 0.0)
        return rng.random(len(rows)) * slack if train else slack / 2

    def video(self, rows: np.ndarray, starts: np.ndarray, train: bool, rng: np.random.Generator) -> torch.Tensor:
        v, fps = self.v, self.cache.fps
        offsets = np.arange(v.num_frames) * (self.window_frames / v.num_frames)
        idx = np.floor(starts[:, None] * fps + offsets[None, :]).astype(np.int64)
        idx = np.minimum(idx, np.maximum(self.cache.n_frames[rows] - 1, 0)[:, None])
        frames = self.cache.frames
        clips = np.stack([frames[r][i] for r, i in zip(rows, idx, strict=True)])  # (B,T,S,S,3) uint8
        return video_inputs(clips, v, train, rng)

    def audio(self, rows: np.ndarray, starts: np.ndarray, train: bool, rng: np.random.Generator) -> torch.Tensor:
        a, sr = self.a, self.cache.sample_rate
        n = self.window_samples
        first = np.round(starts * sr).astype(np.int64)
        last_full = np.maximum(self.cache.n_samples[rows] - n, 0)  # a window past the end moves back
        first = np.minimum(first, last_full)
        gain = volume_gains(len(rows), a, train, rng)
        if self.cache.log_mels is not None:
            spec = self._spectrogram_windows(rows, first)
            if gain is not None:
                spec += torch.from_numpy(2.0 * np.log(gain)).float().view(-1, 1, 1, 1)
        else:
            audio = self.cache.audio
            waves = np.zeros((len(rows), n), np.float32)
            for j, (r, s0) in enumerate(zip(rows, first, strict=True)):
                seg = audio[r, s0 : min(s0 + n, self.cache.n_samples[r])]
                waves[j, : len(seg)] = seg
            spec = wave_log_mels(waves, a, gain)
        return augment_spectrogram(spec, a, train, rng)

    def _spectrogram_windows(self, rows: np.ndarray, first_sample: np.ndarray) -> torch.Tensor:
        """The window's frames sliced from the whole-clip log-mel (frame k starts at sample k * hop)."""
        mels = self.cache.log_mels
        assert mels is not None, "only called for a cache with whole-clip log-mels"
        frames = self.a.n_frames
        f0 = np.minimum(first_sample // self.a.hop_length, mels.shape[2] - frames)
        out = np.stack([mels[r, :, f : f + frames] for r, f in zip(rows, f0, strict=True)])
        return torch.from_numpy(out).unsqueeze(1)

    def batch(self, rows: np.ndarray, *, train: bool, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        rows = np.asarray(rows)
        starts = self._starts(rows, train, rng)
        return self.video(rows, starts, train, rng), self.audio(rows, starts, train, rng)


def video_inputs(clips: np.ndarray, v: VideoSpec, train: bool, rng: np.random.Generator) -> torch.Tensor:
    """(B,T,S,S,3) uint8 frames -> the network's (B,3,T,crop,crop) input: SeLaVi's training augmentation (random
    rescale, crop and flip, and the preset's extra jitter) or the evaluation's centre crop, then normalisation."""
    x = torch.from_numpy(clips).permute(0, 1, 4, 2, 3).float().div_(255.0)  # (B,T,3,S,S)
    b, t = x.shape[:2]
    if train:
        x = random_resized_crops(
            x, v.crop, v.train_short_side, rng, max_rotate_deg=v.max_rotate_deg, max_shear=v.max_shear
        )
        if v.colour_augment:
            x = colour_augment(x, rng)
    else:
        x = F.interpolate(
            x.flatten(0, 1), size=(v.crop, v.crop), mode="bilinear", align_corners=False, antialias=True
        ).view(b, t, 3, v.crop, v.crop)
    x = standardise_clips(x) if v.standardise else (x - v.mean) / v.std
    return x.permute(0, 2, 1, 3, 4).contiguous()  # (B,3,T,H,W)


def volume_gains(n: int, a: AudioSpec, train: bool, rng: np.random.Generator) -> np.ndarray | None:
    """The training volume jitter, one gain a clip (None when evaluating or without jitter)."""
    return rng.uniform(1 - a.volume_jitter, 1 + a.volume_jitter, n) if train and a.volume_jitter else None


def wave_log_mels(waves: np.ndarray, a: AudioSpec, gain: np.ndarray | None) -> torch.Tensor:
    """(B, samples) float32 windows, scaled by ``gain`` -> (B,1,F,T) log-mels at the preset's precision."""
    w = torch.from_numpy(waves)
    if gain is not None:
        w = w * torch.from_numpy(gain).float().view(-1, 1)
    return log_mel(w, a, dtype=None if a.exact else torch.float32)


def augment_spectrogram(spec: torch.Tensor, a: AudioSpec, train: bool, rng: np.random.Generator) -> torch.Tensor:
    """The preset's training augmentations of a log-mel batch (roll, warp, SpecAugment); as it is when evaluating."""
    if train and a.time_roll:
        spec = time_roll(spec, rng)
    if train and (a.max_time_stretch or a.max_freq_warp):
        spec = spectrogram_warp(spec, rng, a.max_time_stretch, a.max_freq_warp)
    if train and a.spec_augment:
        spec = spec_augment(spec, rng)
    return spec


def random_resized_crops(
    x: torch.Tensor,
    crop: int,
    short_side: tuple[int, int],
    rng: np.random.Generator,
    *,
    max_rotate_deg: float = 0.0,
    max_shear: float = 0.0,
) -> torch.Tensor:
    """SeLaVi's spatial augmentation for a batch (B,T,3,S,S) in one ``grid_sample`` call.

    Equivalent to rescaling each clip's short side to a random size in ``short_side``, taking a random
    ``crop`` x ``crop`` window and flipping half the clips horizontally; one affine map per clip, the same
    for all its frames. A per-clip resize loop costs more than the network here. Optional rotation and
    shear are folded into the same map (samples that fall outside the frame repeat its border).
    """
    b, t, c, s, _ = x.shape
    lo, hi = short_side
    sizes = np.maximum(rng.integers(lo, hi + 1, size=b), crop).astype(np.float64)
    frac = crop / sizes  # the crop's share of the (rescaled) frame
    tx = (rng.random(b) * 2 - 1) * (1 - frac)
    ty = (rng.random(b) * 2 - 1) * (1 - frac)
    flip = np.where(rng.random(b) < 0.5, -1.0, 1.0)
    angle = np.deg2rad(rng.uniform(-max_rotate_deg, max_rotate_deg, b)) if max_rotate_deg else np.zeros(b)
    shear = rng.uniform(-max_shear, max_shear, b) if max_shear else np.zeros(b)
    cos, sin = np.cos(angle), np.sin(angle)
    # output -> input coordinates: scale . rotation . shear, then the flip of the x axis
    theta = np.zeros((b, 2, 3))
    theta[:, 0, 0], theta[:, 0, 1] = frac * cos * flip, frac * (cos * shear - sin)
    theta[:, 1, 0], theta[:, 1, 1] = frac * sin * flip, frac * (sin * shear + cos)
    theta[:, 0, 2], theta[:, 1, 2] = tx, ty
    maps = torch.from_numpy(theta).float().repeat_interleave(t, dim=0)
    grid = F.affine_grid(maps, [b * t, c, crop, crop], align_corners=False)
    out = F.grid_sample(x.reshape(b * t, c, s, s), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.view(b, t, c, crop, crop)


def standardise_clips(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Each clip of (B,T,3,H,W) as grey, zero mean and unit variance over the clip, sparse part positive.

    What stays is shape and motion: a clip's own colours, brightness and contrast are gone, and so is
    the polarity (light-on-dark and dark-on-light give the same input), because the sign is chosen so
    that the skew is positive (a small object on a large background is the tail of the distribution).
    """
    b = x.shape[0]
    g = x.mean(dim=2, keepdim=True)
    flat = g.reshape(b, -1)
    z = (flat - flat.mean(1, keepdim=True)) / (flat.std(1, keepdim=True) + eps)
    sign = torch.where(z.pow(3).mean(1, keepdim=True) < 0, -1.0, 1.0)
    return (z * sign).view_as(g).expand_as(x)


def colour_augment(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Per-clip colour randomisation on (B,T,3,H,W) in [0,1].

    Without it a video net can memorise any labelling from a clip's own colours (AV digits gives
    every clip random colours), Sinkhorn hands the same labels back and clustering never starts.
    Channel permutation, occasional grey, per-channel contrast/offset and occasional inversion
    leave only shape and motion as stable evidence.
    """
    b = x.shape[0]
    perms = torch.from_numpy(np.argsort(rng.random((b, 3)), axis=1))
    x = x.gather(2, perms.view(b, 1, 3, 1, 1).expand_as(x))
    grey = torch.from_numpy(rng.random(b) < 0.2).view(b, 1, 1, 1, 1)
    x = torch.where(grey, x.mean(dim=2, keepdim=True).expand_as(x), x)
    gain = torch.from_numpy(rng.uniform(0.6, 1.4, (b, 1, 3, 1, 1))).float()
    offset = torch.from_numpy(rng.uniform(-0.2, 0.2, (b, 1, 3, 1, 1))).float()
    x = (x - 0.5) * gain + 0.5 + offset
    invert = torch.from_numpy(rng.random(b) < 0.5).view(b, 1, 1, 1, 1)
    x = torch.where(invert, 1.0 - x, x)
    return x.clamp_(0.0, 1.0)


def spectrogram_warp(
    spec: torch.Tensor, rng: np.random.Generator, max_time_stretch: float, max_freq_warp: float
) -> torch.Tensor:
    """Per-example time stretch and mel-axis stretch/shift of a log-mel batch (B,1,F,T), one ``grid_sample``.

    A recording played back slightly faster or by a slightly different voice is the same word: the warp
    keeps what a spoken class shares and blurs the exact spectro-temporal pattern of one recording.
    Values beyond the edges repeat the edge (silence or the top band).
    """
    b = spec.shape[0]
    stretch_t = 1.0 + rng.uniform(-max_time_stretch, max_time_stretch, b)
    stretch_f = 1.0 + rng.uniform(-max_freq_warp, max_freq_warp, b)
    shift_f = rng.uniform(-max_freq_warp, max_freq_warp, b)
    theta = np.zeros((b, 2, 3))
    theta[:, 0, 0] = 1.0 / stretch_t  # x = time
    theta[:, 1, 1], theta[:, 1, 2] = 1.0 / stretch_f, shift_f  # y = mel band
    grid = F.affine_grid(torch.from_numpy(theta).float(), list(spec.shape), align_corners=False)
    return F.grid_sample(spec, grid, mode="bilinear", padding_mode="border", align_corners=False)


def time_roll(spec: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Each example of a log-mel batch (B,1,F,T) rolled circularly in time by a random number of frames.

    AV digits (and any set of short sounds padded with silence) places each sound at its own offset: a
    network with zero-padded convolutions sees where, so "early" and "late" become clusters that the
    other modality can never predict. Rolling keeps every frame (the wrap point is mostly silence).
    """
    b, _, f, t = spec.shape
    shift = torch.from_numpy(rng.integers(0, t, size=b))
    idx = (torch.arange(t).view(1, t) - shift.view(b, 1)) % t
    return spec.gather(3, idx.view(b, 1, 1, t).expand(b, 1, f, t))


def spec_augment(
    spec: torch.Tensor, rng: np.random.Generator, max_freq: float = 0.15, max_time: float = 0.15
) -> torch.Tensor:
    """One frequency and one time mask per example (SpecAugment), filled with the example's mean."""
    b, _, f, t = spec.shape
    wf = rng.integers(0, int(f * max_freq) + 1, size=b)
    f0 = (rng.random(b) * (f - wf + 1)).astype(np.int64)
    wt = rng.integers(0, int(t * max_time) + 1, size=b)
    t0 = (rng.random(b) * (t - wt + 1)).astype(np.int64)
    fr, tr = np.arange(f)[None, :], np.arange(t)[None, :]
    fmask = torch.from_numpy((fr >= f0[:, None]) & (fr < (f0 + wf)[:, None])).view(b, 1, f, 1)
    tmask = torch.from_numpy((tr >= t0[:, None]) & (tr < (t0 + wt)[:, None])).view(b, 1, 1, t)
    fill = spec.mean(dim=(1, 2, 3), keepdim=True)
    return torch.where(fmask | tmask, fill, spec)
