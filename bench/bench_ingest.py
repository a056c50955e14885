"""Probe throughput of ``build_catalog``: cold with 1 and N threads, then a re-run from the probe cache.

    .venv/bin/python bench/bench_ingest.py [N_CLIPS] [WORKERS]

Writes N real 2-s H.264/AAC clips (tests/media_factory.py) to a temporary folder first.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
os.environ.setdefault("SELAVI_NO_PROGRESS", "1")

from media_factory import make_video  # noqa: E402

from selavi_core.catalog import build_catalog, read_layout  # noqa: E402


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        t = time.perf_counter()
        for i in range(n):
            make_video(src / f"c{i % 10}" / f"{i:05d}.mp4", duration=2.0, fps=25, size=(160, 120), seed=i)
        print(f"wrote {n} clips in {time.perf_counter() - t:.1f} s")
        specs = read_layout(src, "tree", bare=True)
        for w in sorted({1, workers}):
            r = build_catalog(specs, Path(tmp) / f"cat{w}", source=src, workers=w)
            print(f"cold, {w} worker(s): {r.seconds:.2f} s, {n / r.seconds:.0f} files/s ({r.n_probed} probed)")
        r = build_catalog(specs, Path(tmp) / f"cat{workers}", source=src, workers=workers)
        print(f"re-run from the probe cache: {r.seconds:.2f} s ({r.n_probed} probed, {r.n_cached} cached)")


if __name__ == "__main__":
    main()
