"""Running a SeLaVi model over many clips: features, per-head posteriors, predictions.

Shared by pseudo-labelling during training (training augmentations, eval mode) and by assignment
(centred clip and crop). Features are computed once per pass and the tiny heads are applied to
them afterwards, head by head, in row chunks: at 200,000 clips x 10 heads x K=309 holding every
head's posteriors at once would take gigabytes, one head at a time takes one N x K matrix.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from selavi_core.model.device import Precision
from selavi_core.model.networks import SeLaViModel
from selavi_core.progress import progress
from selavi_core.training.loader import Loader

ROW_CHUNK = 16_384


def _chunks(n: int, size: int) -> Iterator[slice]:
    for i in range(0, n, size):
        yield slice(i, min(i + size, n))


@torch.no_grad()
def extract_features(
    model: SeLaViModel,
    loader: Loader,
    rows: np.ndarray,
    *,
    precision: Precision,
    batch_size: int,
    train_aug: bool,
    rng: np.random.Generator,
    desc: str = "features",
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled (video, audio) encoder features of source ``rows`` in eval mode, float32 (encoders under ``precision``).

    Batches come from ``loader`` (in this process or its DataLoader workers)."""
    model.eval()
    fvs, fas = [], []
    batches = [rows[sl] for sl in _chunks(len(rows), batch_size)]
    made = loader.iterate(batches, train=train_aug, rng=rng)
    for video, audio in progress(made, total=len(batches), desc=desc, unit="batch"):
        video, audio = precision.inputs(video, audio)
        with precision.autocast():
            fv, fa = model.encode(video, audio)
        fvs.append(fv.float().cpu().numpy())
        fas.append(fa.float().cpu().numpy())
    return np.concatenate(fvs), np.concatenate(fas)


@torch.no_grad()
def head_log_posteriors(
    model: SeLaViModel, fv: np.ndarray, fa: np.ndarray, head: int, device: torch.device
) -> tuple[np.ndarray, np.ndarray | None]:
    """(log p_video, log p_audio) of one head as float32 (N, K); for concat fusion (log p, None).

    Heads run in float32 even when encoders ran in bf16: the posteriors are raised to the power
    lambda/2 = 10 by Sinkhorn, which would amplify bf16 rounding.
    """
    model.eval()
    if model.fusion == "concat":
        mlp = getattr(model, f"mlp_c{head}")
        x = np.concatenate([fv, fa], axis=1)
        out = np.empty((len(x), model.clusters), np.float32)
        for sl in _chunks(len(x), ROW_CHUNK):
            out[sl] = torch.log_softmax(mlp(torch.from_numpy(x[sl]).to(device)).float(), dim=1).cpu().numpy()
        return out, None
    mv, ma = getattr(model, f"mlp_v{head}"), getattr(model, f"mlp_a{head}")
    lv = np.empty((len(fv), model.clusters), np.float32)
    la = np.empty_like(lv)
    for sl in _chunks(len(fv), ROW_CHUNK):
        lv[sl] = torch.log_softmax(mv(torch.from_numpy(fv[sl]).to(device)).float(), dim=1).cpu().numpy()
        la[sl] = torch.log_softmax(ma(torch.from_numpy(fa[sl]).to(device)).float(), dim=1).cpu().numpy()
    return lv, la


def margin_sum(log_p: np.ndarray) -> float:
    """Sum over rows of (max - mean) log-probability: how sharply a modality's posteriors pick a cluster."""
    return float(np.sum(log_p.max(axis=1) - log_p.mean(axis=1), dtype=np.float64))


def equalise_confidence(
    lv: np.ndarray, la: np.ndarray, margin_v: float, margin_a: float
) -> tuple[np.ndarray, np.ndarray]:
    """Temper two modalities' log posteriors to the same mean margin (their average), renormalised.

    In p_v p_a the sharper modality decides the labels alone; once it has settled on clusters of its
    own the other cannot follow and nothing shared forms. Tempering p -> p^t (t = target / margin)
    keeps each modality's ranking of clusters and gives both the same say. Margins are means over
    all rows (all ranks), from :func:`margin_sum`.
    """
    target = 0.5 * (margin_v + margin_a)
    out = []
    for log_p, margin in ((lv, margin_v), (la, margin_a)):
        t = target / max(margin, 1e-12)
        z = log_p.astype(np.float64) * t
        z -= z.max(axis=1, keepdims=True)
        z -= np.log(np.exp(z).sum(axis=1, keepdims=True))
        out.append(z.astype(np.float32))
    return out[0], out[1]


def joint_log_posterior(lv: np.ndarray, la: np.ndarray | None, audio_weight: float = 0.5) -> np.ndarray:
    """What Sinkhorn sees: the mean of the two log posteriors, so that P^lam = (p_v p_a)^(lam/2).

    ``audio_weight`` w gives the weighted mean (1 - w) log p_v + w log p_a; 0.5 is SeLaVi's product.
    """
    if la is None:
        return lv
    return (1.0 - audio_weight) * lv + audio_weight * la


def predictions(model: SeLaViModel, fv: np.ndarray, fa: np.ndarray, device: torch.device) -> dict[str, np.ndarray]:
    """Per clip and head: joint / video-only / audio-only cluster, confidence and margin, each (N, H).

    Joint cluster = argmax p_v * p_a; confidence is that product renormalised over clusters, and
    margin its gap to the second best. With concat fusion there is one posterior; the video-only
    and audio-only predictions then come from the same heads with the other modality's features
    zeroed (a degraded-modality probe, not SeLaVi's separate heads).
    """
    n, h = len(fv), model.heads
    out: dict[str, np.ndarray] = {k: np.empty((n, h), np.int32) for k in ("joint", "video", "audio")}
    out.update({k: np.empty((n, h), np.float32) for k in ("confidence", "margin")})
    for head in range(h):
        lv, la = head_log_posteriors(model, fv, fa, head, device)
        if la is None:
            joint = lv
            out["video"][:, head] = head_log_posteriors(model, fv, np.zeros_like(fa), head, device)[0].argmax(1)
            out["audio"][:, head] = head_log_posteriors(model, np.zeros_like(fv), fa, head, device)[0].argmax(1)
        else:
            joint = lv.astype(np.float64) + la
            out["video"][:, head] = lv.argmax(1)
            out["audio"][:, head] = la.argmax(1)
        joint = joint - joint.max(axis=1, keepdims=True)
        p = np.exp(joint)
        p /= p.sum(axis=1, keepdims=True)
        top2 = np.partition(p, -2, axis=1)[:, -2:] if p.shape[1] > 1 else np.concatenate([np.zeros_like(p), p], 1)
        out["joint"][:, head] = p.argmax(1)
        out["confidence"][:, head] = top2[:, 1]
        out["margin"][:, head] = top2[:, 1] - top2[:, 0]
    return out
