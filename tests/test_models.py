"""The SeLaVi network: torchvision-identical trunks at paper widths, narrow trunks on the same code path, heads."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet
from torchvision.models.video import VideoResNet, r2plus1d_18

from selavi_core.config import CPU_SMALL, PAPER, ModelSpec
from selavi_core.model.device import bf16_supported, channels_last_inputs, cpu_autocast, to_channels_last
from selavi_core.model.networks import (
    AudioEncoder,
    Head,
    NarrowR2Plus1D,
    NarrowResNet9,
    SeLaViModel,
    VideoEncoder,
    build_model,
    posteriors,
    stem_mid_width,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


FULL = (64, 128, 256, 512)
SMALL = CPU_SMALL.model.video_widths


def shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def torchvision_resnet9() -> ResNet:
    net = ResNet(BasicBlock, [1, 1, 1, 1])
    net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    net.fc = nn.Identity()
    return net


def tiny_inputs(b: int = 2, t: int = 4, hw: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(b, 3, t, hw, hw, generator=g), torch.randn(b, 1, 40, 99, generator=g)


def randomise_bn_stats(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm buffers, so that comparisons also cover running statistics."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def test_paper_video_encoder_is_torchvision_r2plus1d_18():
    enc = VideoEncoder(FULL)
    assert isinstance(enc.base, VideoResNet) and isinstance(enc.base.fc, nn.Identity)
    tv = r2plus1d_18(weights=None)
    tv.fc = nn.Identity()
    assert shapes(enc) == {f"base.{k}": v for k, v in shapes(tv).items()}
    assert "base.stem.0.weight" in shapes(enc) and "base.layer1.0.conv1.0.0.weight" in shapes(enc)


@torch.inference_mode()
def test_narrow_video_builder_at_paper_widths_is_r2plus1d_18():
    tv = r2plus1d_18(weights=None)
    tv.fc = nn.Identity()
    narrow = NarrowR2Plus1D(FULL)
    assert list(shapes(narrow).items()) == list(shapes(tv).items())  # same names, order and shapes
    randomise_bn_stats(tv)
    narrow.load_state_dict(tv.state_dict())
    video, _ = tiny_inputs()
    out_tv, out_narrow = tv.eval()(video), narrow.eval()(video)
    assert out_tv.shape == (2, 512)
    torch.testing.assert_close(out_narrow, out_tv)


@torch.inference_mode()
def test_video_encoder_with_one_block_per_stage():
    """The cpu-small trunk: R(2+1)D-18's blocks, stem and names with one BasicBlock per stage."""
    deep, shallow = VideoEncoder((8, 16, 32, 64)), VideoEncoder((8, 16, 32, 64), layers=(1, 1, 1, 1))
    assert [len(getattr(shallow.base, f"layer{i}")) for i in range(1, 5)] == [1, 1, 1, 1]
    shallow_keys = set(shapes(shallow))
    assert shallow_keys < set(shapes(deep))  # a subset: the second block of each stage is gone
    assert not any(".1.conv" in k for k in shallow_keys)
    video, _ = tiny_inputs()
    assert shallow.eval()(video).shape == (2, 64)
    assert isinstance(VideoEncoder(FULL, layers=(1, 1, 1, 1)).base, NarrowR2Plus1D)  # not r2plus1d_18 any more


@torch.inference_mode()
def test_narrow_audio_builder_at_paper_widths_is_torchvision_resnet9():
    tv = torchvision_resnet9()
    narrow = NarrowResNet9(FULL)
    assert list(shapes(narrow).items()) == list(shapes(tv).items())
    assert "layer2.0.downsample.0.weight" in shapes(narrow) and "layer1.0.downsample.0.weight" not in shapes(narrow)
    randomise_bn_stats(tv)
    narrow.load_state_dict(tv.state_dict())
    _, audio = tiny_inputs()
    torch.testing.assert_close(narrow.eval()(audio), tv.eval()(audio))
    enc = AudioEncoder(FULL)
    assert isinstance(enc.base, ResNet)
    assert shapes(enc) == {f"base.{k}": v for k, v in shapes(tv).items()}


@torch.inference_mode()
def test_encoder_output_shapes_for_both_presets():
    video, audio = tiny_inputs(b=3, t=8, hw=48)
    assert VideoEncoder(SMALL).eval()(video).shape == (3, SMALL[-1])
    assert AudioEncoder(SMALL).eval()(audio).shape == (3, SMALL[-1])
    assert AudioEncoder(FULL).eval()(audio).shape == (3, 512)
    small_keys = shapes(VideoEncoder(SMALL))
    mid = stem_mid_width(SMALL[0])
    assert stem_mid_width(16) == 11 and stem_mid_width(64) == 45  # torchvision's 45, scaled and rounded
    assert small_keys["base.stem.0.weight"] == (mid, 3, 1, 7, 7)
    assert small_keys["base.stem.3.weight"] == (SMALL[0], mid, 3, 1, 1)
    assert set(small_keys) == set(shapes(VideoEncoder(FULL)))


def test_random_init_is_kaiming_fan_out_and_unit_batchnorm():
    torch.manual_seed(0)
    enc = VideoEncoder(FULL)
    w = enc.base.layer4[1].conv2[0][3].weight  # Conv3d(mid, 512, (3,1,1)): fan_out = 512 * 3
    assert w.std().item() == pytest.approx(math.sqrt(2.0 / (512 * 3)), rel=0.05)
    audio = AudioEncoder(SMALL)
    w = audio.base.conv1.weight  # replaced stem gets the same init
    assert w.std().item() == pytest.approx(math.sqrt(2.0 / (SMALL[0] * 49)), rel=0.15)
    for m in [*enc.modules(), *audio.modules()]:
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm3d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


def test_head_matches_official_indices():
    head = Head(32, 32, 7, dropout=0.3)
    keys = shapes(head)
    assert keys == {
        "block_forward.2.weight": (32, 32),
        "block_forward.4.weight": (32,),
        "block_forward.4.bias": (32,),
        "block_forward.4.running_mean": (32,),
        "block_forward.4.running_var": (32,),
        "block_forward.4.num_batches_tracked": (),
        "block_forward.8.weight": (7, 32),
        "block_forward.8.bias": (7,),
    }
    bf = head.block_forward
    assert isinstance(bf[0], nn.Flatten) and isinstance(bf[6], nn.ReLU) and isinstance(bf[4], nn.BatchNorm1d)
    assert bf[1].p == bf[7].p == 0.3 and bf[2].bias is None
    x = torch.randn(5, 32)
    head.train()
    assert head(x).shape == (5, 7)
    assert int(bf[4].num_batches_tracked) == 1  # BN saw the (B, C, 1) view
    head.eval()
    torch.testing.assert_close(head(x), head(x))


def small_spec(**kw) -> ModelSpec:
    return ModelSpec(video_widths=(8, 8, 16, 16), audio_widths=(8, 16, 16, 32), heads=3, **kw)


def test_augment_model_has_independent_heads_per_modality():
    model = SeLaViModel(small_spec(), clusters=5)
    assert (model.heads, model.clusters, model.fusion) == (3, 5, "augment")
    keys = shapes(model)
    for h in range(3):
        assert keys[f"mlp_v{h}.block_forward.2.weight"] == (16, 16)
        assert keys[f"mlp_a{h}.block_forward.2.weight"] == (32, 32)
        assert keys[f"mlp_a{h}.block_forward.8.weight"] == (5, 32)
    assert not any(k.startswith("mlp_c") for k in keys) and "mlp_v3.block_forward.8.bias" not in keys
    ptrs = [p.data_ptr() for p in model.head_parameters()]
    assert len(ptrs) == len(set(ptrs)) == 3 * 2 * 5  # 5 parameter tensors per head, none shared
    all_params = {p.data_ptr() for p in model.parameters()}
    assert set(ptrs) | {p.data_ptr() for p in model.encoder_parameters()} == all_params
    assert not set(ptrs) & {p.data_ptr() for p in model.encoder_parameters()}

    model.eval()
    video, audio = tiny_inputs(b=4, t=4, hw=24)
    with torch.inference_mode():
        lv, la = model(video, audio)
        assert len(lv) == len(la) == 3 and all(x.shape == (4, 5) for x in lv + la)
        assert not torch.allclose(lv[0], lv[1])  # different heads, different weights
        fv, fa = model.encode(video, audio)
        sub_v, sub_a = model.heads_logits(fv, fa, heads=[2])
        torch.testing.assert_close(sub_v[0], lv[2])
        torch.testing.assert_close(sub_a[0], la[2])
        last = model.audio_head_last_linear(1)
        assert last is model.mlp_a1.block_forward[8]
        last.weight.copy_(last.weight.flip(0))  # permuting clusters permutes that head's logits
        last.bias.copy_(last.bias.flip(0))
        torch.testing.assert_close(model(video, audio)[1][1], la[1].flip(1))


def test_concat_model_heads_see_both_features():
    model = SeLaViModel(small_spec(fusion="concat"), clusters=4).eval()
    keys = shapes(model)
    assert keys["mlp_c0.block_forward.2.weight"] == (48, 48)  # 16 video + 32 audio
    assert not any(k.startswith(("mlp_v", "mlp_a")) for k in keys)
    video, audio = tiny_inputs(b=2, t=4, hw=24)
    with torch.inference_mode():
        logits, none = model(video, audio)
        assert none is None and len(logits) == 3 and logits[0].shape == (2, 4)
        other_audio = model(video, audio + 1.0)[0][0]
        assert not torch.allclose(other_audio, logits[0])  # audio reaches the concat heads
        log_p, second = posteriors(model, *model.encode(video, audio))
        assert second is None and log_p.shape == (3, 2, 4)
    with pytest.raises(ValueError, match="modality alignment"):
        model.audio_head_last_linear(0)
    with pytest.raises(ValueError, match="unknown fusion"):
        SeLaViModel(small_spec(fusion="sum"), clusters=4)


@torch.inference_mode()
def test_posteriors_are_float32_log_softmax_even_under_bf16():
    model = SeLaViModel(small_spec(), clusters=6).eval()
    video, audio = tiny_inputs(b=4, t=4, hw=24)
    fv, fa = model.encode(video, audio)
    log_pv, log_pa = posteriors(model, fv, fa)
    assert log_pv.shape == log_pa.shape == (3, 4, 6) and log_pv.dtype == torch.float32
    torch.testing.assert_close(log_pv.exp().sum(-1), torch.ones(3, 4))
    lv, la = model.heads_logits(fv, fa)
    torch.testing.assert_close(log_pa[2], F.log_softmax(la[2], dim=-1))
    with cpu_autocast(True):
        log_pv16, _ = posteriors(model, fv, fa, heads=[0, 1])
    assert log_pv16.dtype == torch.float32 and log_pv16.shape == (2, 4, 6)
    torch.testing.assert_close(log_pv16, log_pv[:2], atol=0.1, rtol=0.05)


def test_channels_last_and_bf16_autocast_match_fp32():
    torch.manual_seed(0)
    model = build_model(CPU_SMALL.with_overrides(model={"heads": 2}), clusters=10).eval()
    video, audio = tiny_inputs(b=4, t=8, hw=48)
    with torch.inference_mode():
        ref_v, ref_a = model.encode(video, audio)
        to_channels_last(model)
        assert model.video_network.base.stem[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
        vcl, acl = channels_last_inputs(video, audio)
        assert vcl.is_contiguous(memory_format=torch.channels_last_3d) and torch.equal(vcl, video)
        cl_v, cl_a = model.encode(vcl, acl)
        torch.testing.assert_close(cl_v, ref_v, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(cl_a, ref_a, atol=1e-4, rtol=1e-4)
        with cpu_autocast(True):
            bf_v, bf_a = model.encode(vcl, acl)
            logits_v, _ = model.heads_logits(bf_v, bf_a)
    assert logits_v[0].dtype == torch.bfloat16  # (pooled features may come back fp32: autocast upcasts pooling)
    assert not torch.equal(bf_v.float(), ref_v)  # the trunk really ran in bf16
    for bf, ref in ((bf_v, ref_v), (bf_a, ref_a)):
        rel = (bf.float() - ref).norm() / ref.norm()
        assert rel < 0.05, f"bf16 features differ from fp32 by {rel:.3f} (relative)"


def test_training_step_reaches_every_parameter_under_bf16_channels_last():
    torch.manual_seed(0)
    model = to_channels_last(SeLaViModel(small_spec(), clusters=5).train())
    video, audio = channels_last_inputs(*tiny_inputs(b=4, t=4, hw=24))
    labels = torch.randint(0, 5, (4, 3))
    with cpu_autocast(bf16_supported()):
        lv, la = model(video, audio)
        loss = sum(
            F.cross_entropy(v.float(), labels[:, h]) + F.cross_entropy(a.float(), labels[:, h])
            for h, (v, a) in enumerate(zip(lv, la, strict=True))
        )
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no finite gradient for {missing[:5]}"


def test_build_model_follows_the_preset():
    model = build_model(CPU_SMALL, clusters=12)
    assert model.spec is CPU_SMALL.model and model.clusters == 12 and model.heads == CPU_SMALL.model.heads
    assert model.video_network.out_dim == CPU_SMALL.model.video_dim
    assert PAPER.model.video_widths == FULL  # the paper preset builds torchvision's trunks
    with pytest.raises(ValueError):
        SeLaViModel(small_spec(), clusters=0)


def test_one_precision_policy_decides_autocast_and_layout():
    from selavi_core.errors import SelaviError
    from selavi_core.model.device import precision_for, resolve_device

    cpu = torch.device("cpu")
    asked = precision_for(cpu, True)
    assert asked.cpu_bf16 == asked.bf16 == bf16_supported()  # honoured only where the CPU has native bf16
    plain = precision_for(cpu, False)
    assert not plain.bf16 and plain.channels_last
    with plain.autocast():
        assert not torch.is_autocast_enabled("cpu")
    if asked.bf16:
        with asked.autocast():
            assert torch.is_autocast_enabled("cpu")
    model = plain.prepare(SeLaViModel(small_spec(), clusters=5))
    conv = next(m for m in model.video_network.modules() if isinstance(m, torch.nn.Conv3d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    video, audio = plain.inputs(*tiny_inputs(b=2, t=4, hw=24))
    assert video.is_contiguous(memory_format=torch.channels_last_3d)
    assert audio.is_contiguous(memory_format=torch.channels_last)
    assert resolve_device("cpu") == cpu
    if not torch.cuda.is_available():
        assert resolve_device("auto") == cpu
        with pytest.raises(SelaviError, match="no CUDA device"):
            resolve_device("cuda")
