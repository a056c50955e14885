"""The SeLaVi network: two independent encoders and H clustering heads per modality.

Layout follows ../shared/docs/selavi-method.md section 1 so that the official checkpoints load by name:

- ``video_network.base``: torchvision's R(2+1)D-18 (``fc`` replaced by identity, 512-d pooled feature).
- ``audio_network.base``: "ResNet-9", torchvision's ResNet with one BasicBlock per stage and a 1-channel stem.
- ``mlp_v{h}`` / ``mlp_a{h}``: one MLP head per modality and head, no weights shared, each giving K logits.

The ``cpu-small`` preset runs the same architecture at smaller widths; the narrow builders below reuse
torchvision's own blocks and module names, so a narrow model differs from the paper model only in tensor sizes.
With ``fusion="concat"`` (an option of ours, not SeLaVi) the heads ``mlp_c{h}`` see both features concatenated.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock as BasicBlock2d
from torchvision.models.resnet import ResNet
from torchvision.models.video import r2plus1d_18
from torchvision.models.video.resnet import BasicBlock as BasicBlock3d
from torchvision.models.video.resnet import Conv2Plus1D

from selavi_core.config import FUSIONS, ModelSpec, Preset

#: The paper's encoder widths; at these widths we use torchvision's models verbatim.
FULL_WIDTHS = (64, 128, 256, 512)
R2PLUS1D_18_LAYERS = (2, 2, 2, 2)  # BasicBlocks per stage of R(2+1)D-18
#: Output width of the first (spatial) stem conv in torchvision's R(2+1)D stem, scaled with widths[0].
R2PLUS1D_STEM_MID = 45


def stem_mid_width(w0: int) -> int:
    """Width of the spatial stem conv for a stem of output width ``w0`` (45 at 64, rounded half up)."""
    return max(1, (R2PLUS1D_STEM_MID * w0 + FULL_WIDTHS[0] // 2) // FULL_WIDTHS[0])


def init_encoder_weights(module: nn.Module) -> None:
    """SeLaVi's random init: Kaiming-normal (fan_out) convs, BatchNorm weight 1 and bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm3d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class NarrowR2Plus1D(nn.Module):
    """torchvision's VideoResNet(BasicBlock, Conv2Plus1D, layers, R2Plus1dStem) at any widths, same names.

    torchvision hard-codes 64/128/256/512; at those widths this module has exactly ``r2plus1d_18``'s
    state_dict keys and shapes (a test checks it), so narrow and paper models share one code path.
    """

    # stages added by name in __init__ (add_module keeps torchvision's keys)
    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(self, widths: Sequence[int], layers: Sequence[int] = R2PLUS1D_18_LAYERS):
        super().__init__()
        w0, mid = widths[0], stem_mid_width(widths[0])
        self.stem = nn.Sequential(
            nn.Conv3d(3, mid, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
            nn.BatchNorm3d(mid),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid, w0, kernel_size=(3, 1, 1), stride=(1, 1, 1), padding=(1, 0, 0), bias=False),
            nn.BatchNorm3d(w0),
            nn.ReLU(inplace=True),
        )
        inplanes = w0
        for i, (planes, n) in enumerate(zip(widths, layers, strict=True)):
            stride = 1 if i == 0 else 2
            downsample = None
            if stride != 1 or inplanes != planes:
                downsample = nn.Sequential(
                    nn.Conv3d(inplanes, planes, 1, stride=Conv2Plus1D.get_downsample_stride(stride), bias=False),
                    nn.BatchNorm3d(planes),
                )
            blocks = [BasicBlock3d(inplanes, planes, Conv2Plus1D, stride, downsample)]
            blocks += [BasicBlock3d(planes, planes, Conv2Plus1D) for _ in range(1, n)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.fc = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


class NarrowResNet9(nn.Module):
    """torchvision's ResNet(BasicBlock, [1,1,1,1]) with a 1-channel stem, at any widths, same names.

    torchvision's ResNet hard-codes a 64-wide stem, hence this copy of its structure (built from its BasicBlock).
    """

    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(self, widths: Sequence[int], layers: Sequence[int] = (1, 1, 1, 1)):
        super().__init__()
        w0 = widths[0]
        self.conv1 = nn.Conv2d(1, w0, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w0)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = w0
        for i, (planes, n) in enumerate(zip(widths, layers, strict=True)):
            stride = 1 if i == 0 else 2
            downsample = None
            if stride != 1 or inplanes != planes:
                downsample = nn.Sequential(
                    nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
                )
            blocks = [BasicBlock2d(inplanes, planes, stride, downsample)]
            blocks += [BasicBlock2d(planes, planes) for _ in range(1, n)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


class _Trunk(nn.Module):
    """An encoder trunk (``base``) whose pooled feature has ``widths[-1]`` channels."""

    widths: tuple[int, ...]
    base: nn.Module

    @property
    def out_dim(self) -> int:
        return self.widths[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x)


class VideoEncoder(_Trunk):
    """R(2+1)D-18 trunk: (B, 3, T, H, W) -> (B, widths[-1]); torchvision's ``r2plus1d_18`` at paper widths."""

    def __init__(self, widths: Sequence[int] = FULL_WIDTHS, layers: Sequence[int] = R2PLUS1D_18_LAYERS):
        super().__init__()
        self.widths, self.layers = tuple(widths), tuple(layers)
        if self.widths == FULL_WIDTHS and self.layers == R2PLUS1D_18_LAYERS:
            self.base = r2plus1d_18(weights=None)
            self.base.fc = nn.Identity()
        else:
            self.base = NarrowR2Plus1D(self.widths, self.layers)
        init_encoder_weights(self.base)


class AudioEncoder(_Trunk):
    """SeLaVi's "ResNet-9" on log-mel spectrograms: (B, 1, F, T) -> (B, widths[-1]).

    All convs (including the replaced 1-channel stem) get the Kaiming fan_out init; the stem is followed by
    BatchNorm, so its initial scale hardly matters.
    """

    def __init__(self, widths: Sequence[int] = FULL_WIDTHS):
        super().__init__()
        self.widths = tuple(widths)
        if self.widths == FULL_WIDTHS:
            self.base = ResNet(BasicBlock2d, [1, 1, 1, 1])
            self.base.conv1 = nn.Conv2d(1, FULL_WIDTHS[0], kernel_size=7, stride=2, padding=3, bias=False)
            self.base.fc = nn.Identity()
        else:
            self.base = NarrowResNet9(self.widths)
        init_encoder_weights(self.base)


class _ToChannels1d(nn.Module):
    """(B, C) -> (B, C, 1): the official head applies BatchNorm to this view (for SyncBatchNorm)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.view(x.size(0), -1, 1)


class _FromChannels1d(nn.Module):
    """(B, C, 1) -> (B, C)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.view(x.size(0), -1)


class Head(nn.Module):
    """SeLaVi's "MLPv2" head. Indices in ``block_forward`` match the official checkpoints (2, 4 and 8 hold weights)."""

    def __init__(self, in_dim: int, hidden: int, k: int, dropout: float = 0.3):
        super().__init__()
        self.block_forward = nn.Sequential(
            nn.Flatten(),  # 0
            nn.Dropout(p=dropout),  # 1
            nn.Linear(in_dim, hidden, bias=False),  # 2
            _ToChannels1d(),  # 3
            nn.BatchNorm1d(hidden),  # 4
            _FromChannels1d(),  # 5
            nn.ReLU(inplace=True),  # 6
            nn.Dropout(p=dropout),  # 7
            nn.Linear(hidden, k),  # 8
        )

    @property
    def last_linear(self) -> nn.Linear:
        layer = self.block_forward[8]
        assert isinstance(layer, nn.Linear)
        return layer

    def forward(self, x: Tensor) -> Tensor:
        return self.block_forward(x)


class SeLaViModel(nn.Module):
    """Two encoders plus H heads per modality (``augment``) or H heads on concatenated features (``concat``).

    Logits come back as lists with one (B, K) tensor per head, the official model's output format.
    Under CPU bf16 autocast logits are bf16 (pooled features may be either: autocast runs pooling in fp32); use
    :func:`posteriors` for float32 log-probabilities.
    """

    def __init__(self, spec: ModelSpec, clusters: int):
        super().__init__()
        if spec.fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {spec.fusion!r}; choose one of {', '.join(FUSIONS)}")
        if clusters < 1 or spec.heads < 1:
            raise ValueError(f"need at least one head and one cluster, got heads={spec.heads}, clusters={clusters}")
        self.spec = spec
        self._clusters = int(clusters)
        self.video_network = VideoEncoder(spec.video_widths, spec.video_layers)
        self.audio_network = AudioEncoder(spec.audio_widths)
        dv, da = spec.video_dim, spec.audio_dim
        for h in range(spec.heads):
            if spec.fusion == "augment":
                self.add_module(f"mlp_v{h}", Head(dv, dv, clusters, spec.dropout))
                self.add_module(f"mlp_a{h}", Head(da, da, clusters, spec.dropout))
            else:
                self.add_module(f"mlp_c{h}", Head(dv + da, dv + da, clusters, spec.dropout))

    @property
    def heads(self) -> int:
        return self.spec.heads

    @property
    def clusters(self) -> int:
        return self._clusters

    @property
    def fusion(self) -> str:
        return self.spec.fusion

    def head(self, kind: str, h: int) -> Head:
        """Head ``h`` of ``kind`` "v", "a" or "c"."""
        return getattr(self, f"mlp_{kind}{h}")

    def audio_head_last_linear(self, h: int) -> nn.Linear:
        """The K-way output layer of audio head ``h``: modality alignment permutes its rows."""
        if self.fusion != "augment":
            raise ValueError("modality alignment needs separate audio heads (fusion='augment')")
        return self.head("a", h).last_linear

    def encode(self, video: Tensor, audio: Tensor) -> tuple[Tensor, Tensor]:
        """Pooled encoder features ``(fv (B, Dv), fa (B, Da))``."""
        return self.video_network(video), self.audio_network(audio)

    def heads_logits(
        self, fv: Tensor, fa: Tensor, heads: Sequence[int] | None = None
    ) -> tuple[list[Tensor], list[Tensor] | None]:
        """Per-head logits: (video list, audio list), or (concat list, None). ``heads`` picks a subset."""
        hs = range(self.heads) if heads is None else heads
        if self.fusion == "concat":
            fc = torch.cat([fv, fa], dim=1)
            return [self.head("c", h)(fc) for h in hs], None
        return [self.head("v", h)(fv) for h in hs], [self.head("a", h)(fa) for h in hs]

    def forward(self, video: Tensor, audio: Tensor) -> tuple[list[Tensor], list[Tensor] | None]:
        return self.heads_logits(*self.encode(video, audio))

    def head_parameters(self) -> Iterator[nn.Parameter]:
        for name, p in self.named_parameters():
            if name.startswith("mlp_"):
                yield p

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.video_network.parameters()
        yield from self.audio_network.parameters()


def build_model(preset: Preset, clusters: int) -> SeLaViModel:
    return SeLaViModel(preset.model, clusters)


def self_label_loss(out_a: Sequence[Tensor], out_b: Sequence[Tensor] | None, y: Tensor) -> Tensor:
    """SeLaVi's loss on per-head logits and labels y (B, H): 1/2 mean-over-heads CE(video) + 1/2 mean-over-heads
    CE(audio) ("modality as augmentation"), or the mean over heads of CE for concat heads (``out_b`` None)."""
    heads = len(out_a)
    loss = _sum_over_heads(F.cross_entropy(out_a[h].float(), y[:, h]) for h in range(heads)) / heads
    if out_b is None:
        return loss
    return 0.5 * loss + 0.5 * _sum_over_heads(F.cross_entropy(out_b[h].float(), y[:, h]) for h in range(heads)) / heads


def _sum_over_heads(losses: Iterable[Tensor]) -> Tensor:
    """``sum(losses)`` (the int 0 plus each loss, in order), which is a tensor when there is at least one head."""
    total = sum(losses)
    if not isinstance(total, Tensor):
        raise ValueError("no heads to sum the loss over")
    return total


def posteriors(
    model: SeLaViModel, fv: Tensor, fa: Tensor, heads: Sequence[int] | None = None
) -> tuple[Tensor, Tensor | None]:
    """float32 log-softmax of every head, stacked as (H, B, K): ``(log_pv, log_pa)``.

    For ``concat`` models the first tensor holds the concat heads and the second is None. SeLaVi combines the
    modalities as p_v * p_a, i.e. ``log_pv + log_pa`` (method section 1.3); Sinkhorn wants those in float32 or better.
    """
    first, second = model.heads_logits(fv, fa, heads)
    log_p1 = torch.stack([x.float().log_softmax(dim=-1) for x in first])
    log_p2 = None if second is None else torch.stack([x.float().log_softmax(dim=-1) for x in second])
    return log_p1, log_p2
