"""What the cross-modal matching loss costs: cpu-small training steps with and without it, same batches.

Times full training steps (forward, both losses, backward, Adam) of the cpu-small network on random inputs of
the preset's shapes, alternating the two settings in rounds so that a slow minute on a noisy machine hits both,
and prints the ratio. The recipe's time budget (20 minutes for 3,000 clips on 2 cores) was measured without
the loss; this says how much of it the loss adds.

    .venv/bin/python bench/train_step.py [--steps 20] [--rounds 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20, help="steps per timing")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds of both settings")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)

    from selavi_core.config import get_preset
    from selavi_core.model.device import channels_last_inputs, to_channels_last
    from selavi_core.model.logmel import frame_count
    from selavi_core.model.networks import build_model, self_label_loss
    from selavi_core.training.contrast import CrossModalProjector, TrainingNet, correspondence_loss

    preset = get_preset("cpu-small")
    v, a, b = preset.video, preset.audio, preset.optim.batch_size
    video = torch.randn(b, 3, v.num_frames, v.crop, v.crop)
    audio = torch.randn(b, 1, a.n_mels, frame_count(a.n_samples, a))
    video, audio = channels_last_inputs(video, audio)
    y = torch.randint(0, 10, (b, preset.model.heads))

    def make(with_contrast: bool):
        torch.manual_seed(0)
        model = to_channels_last(build_model(preset, 10))
        proj = (
            CrossModalProjector(preset.model.video_dim, preset.model.audio_dim, preset.contrast)
            if with_contrast
            else None
        )
        net = TrainingNet(model, proj).train()
        return net, torch.optim.Adam(net.parameters(), lr=1e-3)

    def steps(net, opt) -> float:
        t0 = time.perf_counter()
        for _ in range(args.steps):
            out_a, out_b, z = net(video, audio)
            loss = self_label_loss(out_a, out_b, y)
            if z is not None:
                loss = loss + preset.contrast.weight * correspondence_loss(*z, preset.contrast.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return (time.perf_counter() - t0) / args.steps

    settings = {"selavi loss alone": make(False), "with the matching loss": make(True)}
    for net, opt in settings.values():
        steps(net, opt)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in settings}
    for _ in range(args.rounds):
        for name, (net, opt) in settings.items():
            times[name].append(steps(net, opt))
    base = statistics.median(times["selavi loss alone"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:24s} {med * 1000:7.1f} ms/step (median of {args.rounds}), ratio {med / base:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
