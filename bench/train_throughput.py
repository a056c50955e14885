"""Which limits training, the data or the model? Clips/s of data loading alone and of the model step alone.

For each preset, on a small generated set of real H.264/AAC files (tests/media_factory.py; VGG-Sound-like
ten-second clips at 320x240, 30 fps, 44.1 kHz by default):

* data: the preset's batches of training windows (``selavi_core.training.loader``), iterated with nothing else
  running: ``paper`` decodes each window from the original files in ``optim.workers`` DataLoader workers (one
  per core unless ``--workers``), ``cpu-small`` reads its uint8 cache in the training process (the cache build
  is timed apart: it happens once per catalog);
* model: full training steps (forward, SeLaVi loss, backward, optimiser step) on one fixed batch of the
  preset's shapes, under the device's precision policy (bf16 autocast and channels-last on a GPU);

then ``data / model``: below 1 the GPU (or CPU) waits for data. Both run alone, so on a CPU machine the
two numbers compete for the same cores in a real run; on a GPU machine they do not.

    .venv/bin/python bench/train_throughput.py                              # both presets, this machine
    .venv/bin/python bench/train_throughput.py --presets paper --paper-batch 4 --steps 2   # a quick CPU look
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
os.environ.setdefault("SELAVI_NO_PROGRESS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _make_clip(args: tuple[str, float, int, tuple[int, int], int]) -> str:
    from media_factory import make_video

    path, seconds, fps, size, seed = args
    make_video(path, duration=seconds, fps=fps, size=size, sample_rate=44_100, seed=seed, gop=2 * fps)
    return Path(path).name


def make_synthetic_catalog(
    root: Path,
    clips: int,
    *,
    seconds: float = 10.0,
    fps: int = 30,
    size: tuple[int, int] = (320, 240),
    classes: int = 4,
    workers: int | None = None,
) -> Path:
    """``clips`` generated MP4s in ``root/src`` (``classes`` label patterns), ingested into ``root/catalog``."""
    import pandas as pd

    from selavi_core.cli import main as cli

    src, catalog = root / "src", root / "catalog"
    if (catalog / "clips.parquet").is_file():
        return catalog
    src.mkdir(parents=True, exist_ok=True)
    jobs = [(str(src / f"c{i:05d}.mp4"), seconds, fps, size, (i % classes) * 1000 + i) for i in range(clips)]
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        names = list(pool.map(_make_clip, jobs, chunksize=4))
    labels = [f"class{i % classes}" for i in range(clips)]
    pd.DataFrame({"path": names, "label": labels}).to_csv(src / "labels.csv", index=False)
    if cli(["ingest", str(src), "--format", "csv", "--out", str(catalog)]) != 0:
        raise SystemExit("ingest failed")
    return catalog


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def data_rate(loader, rows: np.ndarray, batch: int, batches: int, rng: np.random.Generator) -> float:
    """Clips/s of iterating ``batches`` random training batches (after a warm-up that starts the workers)."""
    draw = [rng.choice(rows, size=batch, replace=len(rows) < batch) for _ in range(batches)]
    warm = max(1, min(batches, loader.workers))
    for _ in loader.iterate(draw[:warm], train=True, rng=rng):
        pass
    t0 = time.perf_counter()
    n = 0
    for video, _audio in loader.iterate(draw, train=True, rng=rng):
        n += len(video)
    return n / (time.perf_counter() - t0)


def model_rate(preset, video: torch.Tensor, audio: torch.Tensor, device: torch.device, steps: int) -> float:
    """Clips/s of full training steps on one fixed batch (one warm-up step first)."""
    from selavi_core.model.device import precision_for
    from selavi_core.model.networks import build_model, self_label_loss
    from selavi_core.training.contrast import CrossModalProjector, TrainingNet, correspondence_loss

    precision = precision_for(device, preset.cpu_bf16)
    model = precision.prepare(build_model(preset, 309).to(device))
    m, c = preset.model, preset.contrast
    projector = CrossModalProjector(m.video_dim, m.audio_dim, c).to(device) if c.weight > 0 else None
    net = TrainingNet(model, projector).train()
    o = preset.optim
    if o.optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(net.parameters(), lr=o.lr)
    else:
        opt = torch.optim.SGD(net.parameters(), lr=o.lr, momentum=o.momentum)
    video, audio = precision.inputs(video, audio)
    y = torch.randint(0, 309, (len(video), m.heads), device=device)

    def step() -> None:
        with precision.autocast():
            out_a, out_b, z = net(video, audio)
            loss = self_label_loss(out_a, out_b, y)
            if z is not None:
                loss = loss + c.weight * correspondence_loss(z[0], z[1], c.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * len(video) / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="cpu-small,paper")
    ap.add_argument("--clips", type=int, default=24, help="generated clips (tens are enough)")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each generated clip")
    ap.add_argument("--batches", type=int, default=6, help="batches timed for the data rate")
    ap.add_argument("--steps", type=int, default=3, help="model steps timed")
    ap.add_argument("--workers", type=int, help="DataLoader workers for every preset (default: each preset's own)")
    ap.add_argument("--paper-batch", type=int, help="the paper preset's batch size here (default: its own, 16)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--root", type=Path, help="keep the generated set here (default: a temporary folder)")
    args = ap.parse_args()

    from selavi_core.catalog import catalog_hash, load_catalog
    from selavi_core.config import get_preset
    from selavi_core.model.device import resolve_device
    from selavi_core.training.loader import Loader
    from selavi_core.training.windows import batch_maker, open_source

    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or Path(tmp)
        t0 = time.perf_counter()
        catalog_dir = make_synthetic_catalog(root, args.clips, seconds=args.seconds)
        print(f"{args.clips} clips of {args.seconds:g} s ready in {time.perf_counter() - t0:.1f} s; device {device}, "
              f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}")  # fmt: skip
        catalog, chash = load_catalog(catalog_dir), catalog_hash(catalog_dir)
        print(f"{'preset':10s} {'workers':>7s} {'batch':>5s} {'data clips/s':>12s} {'model clips/s':>13s} "
              f"{'data/model':>10s}  limit")  # fmt: skip
        for name in args.presets.split(","):
            preset = get_preset(name.strip())
            optim: dict = {}
            if args.workers is not None:
                optim["workers"] = args.workers
            if name == "paper" and args.paper_batch:
                optim["batch_size"] = args.paper_batch
            preset = preset.with_overrides(optim=optim)
            t0 = time.perf_counter()
            source = open_source(catalog, catalog_dir, chash, preset, log=lambda *a: None)
            setup = time.perf_counter() - t0
            workers = preset.optim.data_workers()
            loader = Loader(batch_maker(source, preset), workers=workers, device=device)
            try:
                bs = preset.optim.batch_size
                rng = np.random.default_rng(0)
                data = data_rate(loader, source.ok_rows, bs, args.batches, rng)
                video, audio = loader.batch(np.resize(source.ok_rows, bs), train=True, rng=rng)  # fixed inputs
            finally:
                loader.close()
            model = model_rate(preset, video, audio, device, args.steps)
            limit = "data" if data < model else "model"
            print(f"{name:10s} {workers:7d} {bs:5d} {data:12.1f} {model:13.1f} {data / model:10.2f}  {limit}"
                  + (f"   (cache built or opened in {setup:.1f} s)" if preset.cache.enabled else ""))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
