"""``selavi ingest``: the clip catalog of a data set, from one of the layouts it is commonly stored in."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

FORMATS = ("auto", "tree", "folder", "csv", "vggsound", "ave", "kinetics")

DESCRIPTION = """\
Read SOURCE in one of the layouts below, probe every video once (in parallel; unchanged files are
taken from CATALOG_DIR/probe_cache.parquet on a re-run, and a killed ingest resumes from its journal,
probe_cache.journal.jsonl, without probing again what it had done) and write
CATALOG_DIR/clips.parquet (one row per clip: opaque stable clip_id, path, window start_s..end_s,
label, split, duration, fps, size, audio, status ok|error with a reason) and CATALOG_DIR/catalog.json
(source, counts, hash).
A missing or undecodable file is an error row with its reason, never a silent skip.

formats:
  auto      guess from SOURCE: a .csv file or labels.csv -> csv, vggsound.csv -> vggsound,
            Annotations.txt -> ave, only train/val/test folders -> tree, anything else -> folder
  tree      SOURCE/{split}/{class}/{video}, the official SeLaVi layout; --bare for SOURCE/{class}/{video}
              selavi ingest data/ks --format tree --out cat/ks        (data/ks/train/bowling/x.mp4)
  folder    every video under SOURCE, recursively, unlabelled
              selavi ingest ~/Videos --format folder --out cat/mine
  csv       a CSV with a header: path (relative to the CSV's folder or absolute), label, and optional
            start_s, end_s, split, source_id; other columns (speaker...) are kept. SOURCE is the CSV or
            a folder with labels.csv
              selavi ingest demo/labels.csv --format csv --out cat/demo
  vggsound  SOURCE holds clips named <ytid>_<start>_<end>.mp4 (flat or in folders) and the headerless
            VGG-Sound CSV (ytid,start,label,split; default SOURCE/vggsound.csv, else --csv). The times
            are seconds (abc_30_40, abc_000030_000040, abc_30.5_40.5) or milliseconds (abc_30000_40000):
            end - start of at most 20 is seconds, of 20 to 20000 milliseconds. CSV rows without a file
            are reported as missing; files without a row are kept unlabelled
              selavi ingest vggsound/ --format vggsound --csv vggsound.csv --out cat/vgg
  ave       SOURCE is the AVE_Dataset folder: videos in SOURCE/AVE/ (or SOURCE/), Annotations.txt
            (Category&VideoID&Quality&StartTime&EndTime; --annotations to point elsewhere) and
            trainSet/valSet/testSet.txt for splits. Each event window is one clip
              selavi ingest AVE_Dataset/ --format ave --out cat/ave
  kinetics  the Kinetics CSV (label,youtube_id,time_start,time_end,split; --csv, default the single
            .csv in SOURCE) and clips <ytid>_<start:06d>_<end:06d>.mp4 in SOURCE/{split}/{label}/,
            SOURCE/{label}/ or SOURCE/. --kinetics-sound keeps the 32 Kinetics-Sound classes
              selavi ingest k400/ --format kinetics --csv k400/train.csv --kinetics-sound --out cat/ks

Exit status: 0 when at least one clip is ok, 1 when none could be read, 2 for a malformed source.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest",
        help="clip catalog (clips.parquet) from a data-set layout",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", metavar="SOURCE", help="the data-set folder (or CSV file for --format csv)")
    p.add_argument(
        "--format", "-f", dest="fmt", choices=FORMATS, default="auto", help="layout of SOURCE (default: auto)"
    )
    p.add_argument("--out", "-o", required=True, metavar="CATALOG_DIR", help="folder to write the catalog into")
    p.add_argument("--csv", dest="csv_path", metavar="FILE", help="metadata CSV for csv, vggsound and kinetics")
    p.add_argument("--annotations", metavar="FILE", help="AVE Annotations.txt (default SOURCE/Annotations.txt)")
    p.add_argument("--kinetics-sound", action="store_true", help="kinetics: keep only the 32 Kinetics-Sound classes")
    p.add_argument("--bare", action="store_true", help="tree: SOURCE/{class}/{video} without split folders")
    p.add_argument(
        "--workers", type=_positive_int, default=None, metavar="N", help="parallel probes (default: CPU count)"
    )
    p.set_defaults(func=run)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def run(args: argparse.Namespace) -> int:
    from selavi_core.catalog import build_catalog, detect_format, read_layout

    source = os.path.abspath(os.path.expanduser(args.source))
    out = os.path.abspath(os.path.expanduser(args.out))
    fmt = detect_format(source) if args.fmt == "auto" else args.fmt
    if args.fmt == "auto":
        print(f"format: {fmt} (detected; pass --format to choose)")
    specs = read_layout(
        source,
        fmt,
        csv_path=args.csv_path,
        annotations=args.annotations,
        kinetics_sound=args.kinetics_sound,
        bare=args.bare,
        exclude=[out],  # a catalog written inside SOURCE holds preview MP4s: never ingest them as data
    )
    if not specs:
        print(f"selavi ingest: no clips found in {source} as format {fmt}; nothing written", file=sys.stderr)
        return 1
    report = build_catalog(specs, out, workers=args.workers, source=source, fmt=fmt)
    print(report.summary())
    if report.n_ok == 0:
        print(f"selavi ingest: none of the {report.n_clips} clips could be read", file=sys.stderr)
        return 1
    print(f"next: selavi previews {Path(out)}")
    return 0
