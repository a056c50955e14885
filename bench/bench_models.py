"""Encoder throughput and train-step time for a preset on this CPU (not a test: numbers drift, see perf-baselines.md).

    .venv/bin/python bench/bench_models.py --preset cpu-small --batch 64 --rounds 7

Variants are timed in interleaved rounds (A B C ... A B C ...) so that a slow window of a shared machine hits all
of them alike; the minimum is the best estimate of the uncontended cost, the median shows the noise.
Inference is eval mode under ``torch.inference_mode``; a train step is forward, 2 x H heads with cross-entropy
against random labels, backward and an Adam step.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from selavi_core.config import get_preset
from selavi_core.model.device import channels_last_inputs, cpu_autocast, to_channels_last
from selavi_core.model.networks import SeLaViModel, build_model


def inference(model: SeLaViModel, fn: Callable[[], object], bf16: bool) -> Callable[[], None]:
    def run() -> None:
        model.eval()
        with torch.inference_mode(), cpu_autocast(bf16):
            fn()

    return run


def train_step(model: SeLaViModel, video, audio, labels, bf16: bool) -> Callable[[], None]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        model.train()
        with cpu_autocast(bf16):
            lv, la = model(video, audio)
            loss = sum(
                F.cross_entropy(v.float(), labels[:, h]) + F.cross_entropy(a.float(), labels[:, h])
                for h, (v, a) in enumerate(zip(lv, la, strict=True))
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu-small")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--clusters", type=int, default=10)
    ap.add_argument("--frames", type=int, default=None, help="override the preset's video frames")
    ap.add_argument("--crop", type=int, default=None, help="override the preset's video crop")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--only", default="", help="comma-separated substrings: time only matching variants")
    ap.add_argument(
        "--cpu-time",
        action="store_true",
        help="time CPU seconds of this process instead of wall-clock: robust to other jobs on a shared machine, "
        "meaningful with --threads 1 (with more threads it also counts OpenMP spin-waiting)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    preset = get_preset(args.preset)
    b, v, a = args.batch, preset.video, preset.audio
    t, hw = args.frames or v.num_frames, args.crop or v.crop
    video = torch.randn(b, 3, t, hw, hw)
    audio = torch.randn(b, 1, a.n_mels, a.n_frames)
    vcl, acl = channels_last_inputs(video, audio)
    labels = torch.randint(0, args.clusters, (b, preset.model.heads))
    print(
        f"preset {preset.name}: video {tuple(video.shape)}, audio {tuple(audio.shape)}, "
        f"H={preset.model.heads} x 2 heads, K={args.clusters}, threads={torch.get_num_threads()}"
    )

    plain = build_model(preset, args.clusters)
    fast = to_channels_last(build_model(preset, args.clusters))
    variants: dict[str, Callable[[], None]] = {}
    for bf16 in (False, True):
        kind = "bf16" if bf16 else "fp32"
        variants[f"infer video {kind}"] = inference(plain, lambda: plain.video_network(video), bf16)
        variants[f"infer video {kind} + channels_last_3d"] = inference(fast, lambda: fast.video_network(vcl), bf16)
        variants[f"infer audio {kind}"] = inference(plain, lambda: plain.audio_network(audio), bf16)
        variants[f"infer audio {kind} + channels_last"] = inference(fast, lambda: fast.audio_network(acl), bf16)
        variants[f"infer full model {kind}"] = inference(plain, lambda: plain(video, audio), bf16)
        variants[f"infer full model {kind} + channels_last"] = inference(fast, lambda: fast(vcl, acl), bf16)
    if not args.skip_train:
        torch.manual_seed(0)
        tp = build_model(preset, args.clusters)
        tf = to_channels_last(build_model(preset, args.clusters))
        tc = to_channels_last(build_model(preset, args.clusters))
        variants["train step fp32"] = train_step(tp, video, audio, labels, False)
        variants["train step fp32 + channels_last"] = train_step(tc, vcl, acl, labels, False)
        variants["train step bf16 + channels_last"] = train_step(tf, vcl, acl, labels, True)
    if args.only:
        keys = [s.strip() for s in args.only.split(",")]
        variants = {k: f for k, f in variants.items() if any(s in k for s in keys)}

    clock = time.process_time if args.cpu_time else time.perf_counter
    times: dict[str, list[float]] = {k: [] for k in variants}
    for fn in variants.values():  # warm-up (oneDNN primitive creation, allocator)
        fn()
    for _ in range(args.rounds):
        for name, fn in variants.items():
            t0 = clock()
            fn()
            times[name].append(clock() - t0)
    print("CPU seconds (process_time)" if args.cpu_time else "wall-clock seconds")
    print(f"{'variant':<42} {'min s':>8} {'median s':>9} {'clips/s (min)':>14} {'clips/s (median)':>17}")
    for name, ts in times.items():
        lo, med = min(ts), statistics.median(ts)
        print(f"{name:<42} {lo:8.3f} {med:9.3f} {b / lo:14.1f} {b / med:17.1f}")


if __name__ == "__main__":
    main()
