"""Ingest at scale: probing 20,000 files, the re-run from the probe cache, and a killed run's resume.

    .venv/bin/python bench/ingest_scale.py [--files 20000] [--workers N] [--no-kill] [--keep DIR]

A handful of tiny real MP4s (tests/media_factory.py) are hard-linked under ``--files`` names in a
temporary folder: each name is its own file to the catalog (the probe cache keys on path, size and
mtime), so every one is opened and probed, while the folder costs seconds to make, not an hour of
encoding. Then ``selavi ingest SOURCE --format folder --out CATALOG`` runs as its own process:

1. first run: every file probed -> files/s (from the ingest's own time, and wall-clock with start-up);
2. second run: every file from the probe cache -> its time and the ratio second / first;
3. unless ``--no-kill``: a fresh catalog, the ingest SIGKILLed once half the files are in its journal,
   then run again -> how many it took from the killed run's journal and how many it still probed.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from media_factory import make_video  # noqa: E402

#: Distinct source files the links point to (different sizes, with and without audio).
VARIANTS = (
    {"size": (64, 48), "seed": 0},
    {"size": (96, 64), "seed": 1},
    {"size": (48, 32), "seed": 2, "acodec": None},
    {"size": (80, 60), "seed": 3, "fps": 15},
    {"size": (64, 64), "seed": 4},
    {"size": (32, 32), "seed": 5, "duration": 2.0},
)
FILES_PER_FOLDER = 500
SUMMARY = re.compile(r"\((?P<files>\d+) files: (?P<probed>\d+) probed, (?P<cached>\d+) from the probe cache")
RESUMED = re.compile(r"\((?P<resumed>\d+) from an interrupted run\)")
INGEST_SECONDS = re.compile(r", (?P<s>[0-9.]+) s\)")


def make_source(root: Path, n: int) -> None:
    originals = []
    for i, v in enumerate(VARIANTS):
        opts = {"duration": 1.0, "fps": 10, **v}
        originals.append(make_video(root / f"originals/v{i}.mp4", **opts))  # type: ignore[arg-type]
    src = root / "src"
    for i in range(n):
        folder = src / f"d{i // FILES_PER_FOLDER:03d}"
        if i % FILES_PER_FOLDER == 0:
            folder.mkdir(parents=True)
        os.link(originals[i % len(originals)], folder / f"clip{i:06d}.mp4")


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "SELAVI_NO_PROGRESS": "1"}


def _command(src: Path, cat: Path, workers: int | None) -> list[str]:
    cmd = [sys.executable, "-m", "selavi_core.cli", "ingest", str(src), "--format", "folder", "--out", str(cat)]
    return cmd + (["--workers", str(workers)] if workers else [])


def ingest(src: Path, cat: Path, workers: int | None) -> dict[str, float]:
    """One ``selavi ingest`` process: wall seconds, the ingest's own seconds and its counts."""
    t = time.perf_counter()
    done = subprocess.run(_command(src, cat, workers), env=_env(), capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"selavi ingest failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    m, s = SUMMARY.search(done.stdout), INGEST_SECONDS.search(done.stdout)
    assert m and s, done.stdout
    r = RESUMED.search(done.stdout)
    return {
        "wall": wall,
        "seconds": float(s["s"]),
        "probed": int(m["probed"]),
        "cached": int(m["cached"]),
        "resumed": int(r["resumed"]) if r else 0,
    }


def killed_ingest(src: Path, cat: Path, workers: int | None, at: int) -> int:
    """Start ``selavi ingest``, SIGKILL it once ``at`` probes are in its journal; the complete lines left."""
    journal = cat / "probe_cache.journal.jsonl"
    child = subprocess.Popen(_command(src, cat, workers), env=_env(), stdout=subprocess.DEVNULL)
    try:
        while _lines(journal) < at:
            if child.poll() is not None:
                raise SystemExit("the ingest finished before half its files were journalled")
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    return _lines(journal)


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--workers", type=int, default=None, help="selavi ingest --workers (default: its own)")
    ap.add_argument("--no-kill", action="store_true", help="skip the killed-and-resumed run")
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temporary folder)")
    args = ap.parse_args()
    n = args.files

    with tempfile.TemporaryDirectory(dir=args.keep) as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        make_source(root, n)
        print(f"{n} files ({len(VARIANTS)} real MP4s, hard-linked) made in {time.perf_counter() - t:.1f} s")
        src = root / "src"
        first = ingest(src, root / "cat", args.workers)
        assert first["probed"] == n, first
        print(
            f"first run:  {first['seconds']:.1f} s ingest ({n / first['seconds']:.0f} files/s), "
            f"{first['wall']:.1f} s wall with start-up ({n / first['wall']:.0f} files/s); {first['probed']:.0f} probed"
        )
        second = ingest(src, root / "cat", args.workers)
        assert second["cached"] == n, second
        print(
            f"second run: {second['seconds']:.1f} s ingest, {second['wall']:.1f} s wall; all {n} from the probe cache; "
            f"second / first = {second['seconds'] / first['seconds']:.3f} (ingest), "
            f"{second['wall'] / first['wall']:.3f} (wall)"
        )
        if not args.no_kill:
            cat = root / "killed"
            journalled = killed_ingest(src, cat, args.workers, at=n // 2)
            resumed = ingest(src, cat, args.workers)
            print(
                f"killed at {journalled} of {n} journalled; the re-run took {resumed['resumed']:.0f} from the journal, "
                f"probed {resumed['probed']:.0f}, in {resumed['seconds']:.1f} s"
            )
            assert resumed["resumed"] == journalled and resumed["probed"] == n - journalled, resumed


if __name__ == "__main__":
    main()
