"""Decode throughput: one SeLaVi training example per clip, PyAV in-process vs one ffmpeg CLI call per clip.

A training example is 30 RGB frames at short side 112 from a 1 s window plus that 1 s of 24 kHz mono
float audio (selavi-method.md §1.2, §6). Both methods decode the same windows of the same clips in
the same run, in alternating order, so machine noise (perf-baselines.md §0) hits them alike.

    .venv/bin/python bench/decode.py                 # builds 40 AV-digits-like clips in a temp dir
    .venv/bin/python bench/decode.py --clips DIR     # or times the *.mp4 files of DIR
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from media_factory import make_video  # noqa: E402

from selavi_core.media import decode_clip, probe  # noqa: E402

FRAMES, SHORT_SIDE, SECONDS, RATE = 30, 112, 1.0, 24_000


def build_clips(root: Path, n: int) -> list[Path]:
    """AV-digits-like: 2 s, 128x128, 30 fps, H.264 yuv420p + 24 kHz mono AAC, +faststart, light noise."""
    return [
        make_video(root / f"clip_{i:03d}.mp4", duration=2.0, fps=30, size=(128, 128), seed=i, noise=6.0, faststart=True)
        for i in range(n)
    ]


def decode_pyav(path: Path, start: float) -> tuple[np.ndarray, np.ndarray]:
    clip = decode_clip(path, start, start + SECONDS, fps=FRAMES / SECONDS, short_side=SHORT_SIDE, sample_rate=RATE)
    return clip.frames, clip.audio


def decode_cli(path: Path, start: float, width: int, height: int, ffmpeg: str) -> tuple[np.ndarray, np.ndarray]:
    """One ffmpeg process per clip: rgb24 frames on stdout, f32le mono audio on a second pipe."""
    scale = SHORT_SIDE / min(width, height)
    w, h = round(width * scale), round(height * scale)
    r_audio, w_audio = os.pipe()
    cmd = [
        ffmpeg, "-v", "error", "-nostdin", "-ss", f"{start:.6f}", "-t", f"{SECONDS:.6f}", "-i", str(path),
        "-map", "0:v:0", "-vf", f"fps={FRAMES / SECONDS},scale={w}:{h}:flags=area", "-frames:v", str(FRAMES),
        "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
        "-map", "0:a:0", "-ac", "1", "-ar", str(RATE), "-f", "f32le", f"pipe:{w_audio}",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(w_audio,))
    os.close(w_audio)
    audio_bytes: list[bytes] = []

    def read_audio() -> None:
        with os.fdopen(r_audio, "rb") as f:
            audio_bytes.append(f.read())

    reader = threading.Thread(target=read_audio)
    reader.start()
    video_bytes, err = proc.communicate()
    reader.join()
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed on {path}: {err.decode(errors='replace')}")
    frames = np.frombuffer(video_bytes, np.uint8).reshape(-1, h, w, 3)
    audio = np.frombuffer(audio_bytes[0], np.float32)
    n = int(round(SECONDS * RATE))
    audio = np.pad(audio[:n], (0, max(0, n - len(audio))))
    return frames, audio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=Path, help="folder of .mp4 clips (default: build AV-digits-like ones)")
    parser.add_argument("-n", type=int, default=40, help="clips to build when --clips is not given")
    parser.add_argument("--rounds", type=int, default=3, help="passes over all clips per method")
    parser.add_argument("--ffmpeg", default=shutil.which("ffmpeg") or "ffmpeg", help="ffmpeg binary for the CLI path")
    args = parser.parse_args()

    tmp = None
    if args.clips:
        clips = sorted(args.clips.glob("*.mp4"))
    else:
        tmp = tempfile.TemporaryDirectory(prefix="selavi-bench-")
        t = time.perf_counter()
        clips = build_clips(Path(tmp.name), args.n)
        print(f"built {len(clips)} clips in {time.perf_counter() - t:.1f} s")
    if not clips:
        print("no clips", file=sys.stderr)
        return 1
    infos = [probe(p) for p in clips]
    rng = np.random.default_rng(0)
    starts = [float(rng.uniform(0, max(0.0, i.duration_s - SECONDS))) for i in infos]
    version = subprocess.run([args.ffmpeg, "-version"], capture_output=True, text=True).stdout.split("\n")[0]
    print(f"{len(clips)} clips, {FRAMES} frames @ short side {SHORT_SIDE} + {SECONDS:g} s of {RATE} Hz mono")
    print(f"CLI: {version}")

    # warm-up and a cross-check that both paths return the same example
    f_py, a_py = decode_pyav(clips[0], starts[0])
    f_cli, a_cli = decode_cli(clips[0], starts[0], infos[0].width, infos[0].height, args.ffmpeg)
    print(f"shapes: pyav {f_py.shape} {a_py.shape}, cli {f_cli.shape} {a_cli.shape}")
    if f_py.shape == f_cli.shape:
        print(f"mean |pyav - cli| pixel difference: {np.abs(f_py.astype(int) - f_cli.astype(int)).mean():.2f} / 255")
    m = min(len(a_py), len(a_cli))
    print(f"audio correlation pyav vs cli: {np.corrcoef(a_py[:m], a_cli[:m])[0, 1]:.4f}")

    times: dict[str, list[float]] = {"pyav": [], "cli": []}
    cpu: dict[str, float] = {"pyav": 0.0, "cli": 0.0}
    for r in range(args.rounds):
        order = ("pyav", "cli") if r % 2 == 0 else ("cli", "pyav")
        for method in order:
            c0 = os.times()
            t0 = time.perf_counter()
            for path, start, info in zip(clips, starts, infos, strict=True):
                if method == "pyav":
                    decode_pyav(path, start)
                else:
                    decode_cli(path, start, info.width, info.height, args.ffmpeg)
            times[method].append(time.perf_counter() - t0)
            c1 = os.times()
            cpu[method] += (c1.user - c0.user) + (c1.system - c0.system)
            cpu[method] += (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)

    n = len(clips)
    rate = {k: n / min(v) for k, v in times.items()}  # best round: least disturbed by other load
    for k in ("pyav", "cli"):
        med = float(np.median(times[k]))
        print(
            f"{k:5s}: {rate[k]:7.1f} clips/s best round ({1e3 / rate[k]:6.1f} ms/clip), "
            f"median round {1e3 * med / n:6.1f} ms/clip, cpu {1e3 * cpu[k] / (n * args.rounds):6.1f} ms/clip"
        )
    print(f"ratio pyav / cli: {rate['pyav'] / rate['cli']:.1f}x")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
