"""The catalog folder's files and columns, and the read side every later stage uses.

``CATALOG_DIR/clips.parquet`` has one row per clip, ``ok`` or ``error``, in a stable order; its
bytes' hash (``catalog_hash``) is what runs and caches record to notice a changed catalog.
``CATALOG_DIR/catalog.json`` says where it came from. Other stages add their own subfolders
(``cache/``, ``previews/``) next to these files.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from selavi_core.errors import CatalogError
from selavi_core.io import file_hash

CLIPS_FILE = "clips.parquet"
META_FILE = "catalog.json"
PROBE_CACHE_FILE = "probe_cache.parquet"

#: Columns of ``clips.parquet``, in order; columns a layout adds (``speaker``...) follow as strings.
CATALOG_COLUMNS: tuple[str, ...] = (
    "clip_id", "path", "start_s", "end_s", "label", "split", "duration_s", "fps", "width", "height",
    "has_audio", "video_codec", "audio_rate", "status", "error", "source_id",
)  # fmt: skip

STATUS_OK = "ok"
STATUS_ERROR = "error"


def _clips_file(catalog_dir: str | os.PathLike) -> Path:
    path = Path(catalog_dir)
    if path.is_file() and path.name.endswith(".parquet"):
        return path
    if not path.exists():
        raise CatalogError(f"catalog {path} does not exist; create it with `selavi ingest SOURCE --out {path}`")
    clips = path / CLIPS_FILE
    if not clips.is_file():
        raise CatalogError(f"{path} is not a catalog folder (no {CLIPS_FILE}); create it with `selavi ingest`")
    return clips


def load_catalog(catalog_dir: str | os.PathLike) -> pd.DataFrame:
    """The catalog's clips (``ok`` and ``error`` rows) as a DataFrame in file order."""
    clips = _clips_file(catalog_dir)
    try:
        df = pd.read_parquet(clips)
    except Exception as err:  # pyarrow raises several unrelated types for a damaged file
        raise CatalogError(f"{clips} is unreadable: {err}") from err
    missing = [c for c in CATALOG_COLUMNS if c not in df.columns]
    if missing:
        raise CatalogError(f"{clips} lacks columns {', '.join(missing)}; rebuild it with `selavi ingest`")
    return df


def catalog_hash(catalog_dir: str | os.PathLike) -> str:
    """Hash of the ``clips.parquet`` bytes: equal hashes mean the same clips, ids, windows and labels."""
    return file_hash(_clips_file(catalog_dir))


def ok_clips(df: pd.DataFrame) -> pd.DataFrame:
    """The rows that probed fine (``status == "ok"``), renumbered from 0 in catalog order."""
    return df[df["status"] == STATUS_OK].reset_index(drop=True)
