"""``selavi previews CATALOG_DIR``: a browser preview (MP4 + poster JPEG) for every usable clip.

Reads ``CATALOG_DIR/clips.parquet`` directly (columns clip_id, path, start_s, end_s, status) and
writes the previews plus ``index.parquet`` (clip_id, mp4, poster, error) into ``CATALOG_DIR/previews``
unless ``--out`` says otherwise. ``mp4`` and ``poster`` are file names relative to the index's
folder (so the folder can move); the index's home is ``selavi_core.media.preview``
(``write_preview_index``, ``load_preview_index``, ``PreviewIndex``).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "previews",
        help="browser previews (H.264/AAC MP4 + poster JPEG) for every ok clip of a catalog",
        description=(
            "Cut each ok clip window of CATALOG_DIR/clips.parquet once into a small browser-friendly MP4 "
            "(H.264 yuv420p, constant frame rate, AAC, +faststart) and a poster JPEG, and write "
            "index.parquet (clip_id, mp4, poster, error). Existing previews are reused."
        ),
    )
    parser.add_argument("catalog_dir", metavar="CATALOG_DIR", help="folder holding clips.parquet")
    parser.add_argument("--out", metavar="DIR", default=None, help="output folder (default: CATALOG_DIR/previews)")
    parser.add_argument(
        "--workers", metavar="N", type=int, default=None, help="parallel workers (default: cores, >= 2)"
    )
    parser.set_defaults(func=run)


def _resolve(path: str, catalog_dir: Path) -> str:
    """Catalog paths are used as written; relative ones are taken from the catalog folder."""
    p = Path(path)
    return str(p if p.is_absolute() else catalog_dir / p)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from selavi_core.config import check_flag, default_workers
    from selavi_core.errors import CatalogError
    from selavi_core.media.preview import PREVIEWS_DIR, build_previews, clean_orphans, write_preview_index

    check_flag("--workers", args.workers, 1)
    catalog_dir = Path(args.catalog_dir)
    clips_file = catalog_dir / "clips.parquet"
    if not clips_file.is_file():
        raise CatalogError(f"{catalog_dir} has no clips.parquet; build a catalog first with `selavi ingest`")
    try:
        clips = pd.read_parquet(clips_file)
    except (OSError, ValueError) as err:
        raise CatalogError(f"{clips_file} is unreadable: {err}") from err
    missing = {"clip_id", "path", "start_s", "end_s"} - set(clips.columns)
    if missing:
        raise CatalogError(f"{clips_file} lacks column(s) {', '.join(sorted(missing))}")
    if "status" in clips.columns:
        clips = clips[clips["status"].astype(str) == "ok"]
    out_dir = Path(args.out) if args.out else catalog_dir / PREVIEWS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    orphans = clean_orphans(out_dir)
    if orphans:
        print(f"previews: removed {orphans} half-written files that interrupted builds left in {out_dir}")
    workers = default_workers() if args.workers is None else args.workers

    items = [
        (_resolve(str(p), catalog_dir), float(s), float(e))
        for p, s, e in zip(clips["path"], clips["start_s"], clips["end_s"], strict=True)
    ]
    results = build_previews(items, out_dir, workers=workers)

    index = write_preview_index(out_dir, [str(c) for c in clips["clip_id"]], results)

    n_err = int(index["error"].notna().sum())
    print(
        f"previews: {len(index) - n_err} of {len(index)} clips ready in {out_dir}"
        + (f", {n_err} failed" if n_err else "")
    )
    for reason, count in index["error"].dropna().value_counts().head(5).items():
        print(f"  {count} x {reason}")
    return 0
