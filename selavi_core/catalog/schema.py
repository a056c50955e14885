"""The catalog folder's files and columns, and the read side every later stage uses.

``CATALOG_DIR/clips.parquet`` has one row per clip, ``ok`` or ``error``, in a stable order; its
bytes' hash (``catalog_hash``) is what runs and caches record to notice a changed catalog.
``CATALOG_DIR/catalog.json`` says where it came from. Other stages add their own subfolders
(``cache/``, ``previews/``) next to these files.
"""

from __future__ import annotations

import json
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

#: Probe facts added later (the Studio's "does a browser play this file as it is?"). They follow
#: ``CATALOG_COLUMNS`` in catalogs ingested since; ``load_catalog`` adds them, empty, to older catalogs
#: (which stay readable and keep their hash: nothing is rewritten).
PROBE_COLUMNS: tuple[str, ...] = ("container", "audio_codec", "pix_fmt")

#: ``catalog.json``'s list of the folders the clips' files live under: the only places (with the
#: previews folder) the Studio serves media from.
MEDIA_ROOTS_KEY = "media_roots"

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
    for col in PROBE_COLUMNS:  # catalogs from before these facts were probed: unknown, not an error
        if col not in df.columns:
            df[col] = pd.Series([None] * len(df), dtype=object, index=df.index)
    return df


def media_roots(catalog_dir: str | os.PathLike) -> list[Path]:
    """The folders the catalog's media files live under, as recorded at ingest (absolute, resolved).

    ``catalog.json``'s ``media_roots`` (written since the Studio serves source files), else its
    ``source`` (the folder ingested, or a list file's folder). Nothing when the catalog has no
    ``catalog.json``: a row's path alone never makes its folder servable, because a row can point anywhere.
    """
    meta_path = Path(catalog_dir) / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(meta, dict):
        return []
    raw = meta.get(MEDIA_ROOTS_KEY)
    if not isinstance(raw, list):
        src = meta.get("source")
        if not isinstance(src, str) or not src:
            return []
        p = Path(src)
        raw = [str(p.parent if p.is_file() else p)]
    roots = []
    for r in raw:
        if isinstance(r, str) and r and os.path.isabs(r):
            roots.append(Path(os.path.realpath(r)))
    return list(dict.fromkeys(roots))


def catalog_hash(catalog_dir: str | os.PathLike) -> str:
    """Hash of the ``clips.parquet`` bytes: equal hashes mean the same clips, ids, windows and labels."""
    return file_hash(_clips_file(catalog_dir))


def ok_clips(df: pd.DataFrame) -> pd.DataFrame:
    """The rows that probed fine (``status == "ok"``), renumbered from 0 in catalog order."""
    return df[df["status"] == STATUS_OK].reset_index(drop=True)
