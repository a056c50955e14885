"""Log-mel timing and agreement with python_speech_features.logfbank (selavi_core/model/logmel.py).

Median ms per 1 s example on one torch thread (as in a DataLoader worker), single and batched, float64
(the default: exact) and float32, plus the max |ours - logfbank| on FSDD speech when ../shared/data is there.

    .venv/bin/python bench/bench_logmel.py [--reps 50]
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from selavi_core.config import CPU_SMALL, PAPER
from selavi_core.model.logmel import log_mel


def median_ms(fn, n_examples: int, reps: int) -> tuple[float, float]:
    """(wall, CPU) median ms per example. On a shared, loaded machine the wall time of a long call includes
    time-slices given to other processes; the thread's CPU time does not."""
    fn()
    wall, cpu = [], []
    for _ in range(reps):
        t, c = time.perf_counter(), time.thread_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.thread_time() - c)
    return float(np.median(wall)) / n_examples * 1000, float(np.median(cpu)) / n_examples * 1000


def max_diff_on_speech(spec) -> float | None:
    from python_speech_features import logfbank
    from scipy.io import wavfile
    from scipy.signal import resample_poly

    rec = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fsdd" / "recordings"
    files = sorted(rec.glob("*.wav"))[::30]
    if not files:
        return None
    worst = 0.0
    for f in files:
        rate, pcm = wavfile.read(f)
        g = math.gcd(rate, spec.sample_rate)
        w = resample_poly(pcm.astype(np.float64), spec.sample_rate // g, rate // g)
        w = np.pad(w, (0, max(0, spec.n_samples - len(w))))[: spec.n_samples]
        ref = logfbank(
            w,
            spec.sample_rate,
            spec.win_s,
            spec.hop_s,
            spec.n_mels,
            spec.n_fft,
            spec.low_hz,
            spec.high_hz,
            spec.preemph,
        ).T
        worst = max(
            worst, float(np.abs(log_mel(torch.from_numpy(w), spec, int16_scale=False)[0, 0].numpy() - ref).max())
        )
    return worst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=50)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; 1 torch thread")
    for name, spec in (("paper 24 kHz x257", PAPER.audio), ("cpu-small 16 kHz x40", CPU_SMALL.audio)):
        diff = max_diff_on_speech(spec)
        print(f"{name}: max |ours - logfbank| on {300 if diff is not None else 0} FSDD windows: {diff}")
        for dtype in (torch.float64, torch.float32):
            for batch in (1, 8, 64):
                x = torch.randn(batch, spec.n_samples).mul_(0.1)
                wall, cpu = median_ms(
                    lambda x=x, dtype=dtype, spec=spec: log_mel(x, spec, dtype=dtype), batch, args.reps
                )
                print(f"  {str(dtype):14s} batch {batch:3d}: {wall:.3f} ms wall, {cpu:.3f} ms CPU per 1 s example")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
