"""The clip catalog: which clips a data set holds, with their windows, labels and probe results.

``read_layout`` turns a data-set layout (a class-folder tree, a CSV, VGG-Sound, AVE, Kinetics) into
``ClipSpec`` rows without opening any media; ``build_catalog`` probes the files and writes
``CATALOG_DIR/clips.parquet`` (columns ``CATALOG_COLUMNS``) and ``catalog.json``; ``load_catalog``
is how every later stage reads it back.
"""

from __future__ import annotations

from selavi_core.catalog.ingest import IngestReport, build_catalog, make_clip_id
from selavi_core.catalog.layouts import KINETICS_SOUND_CLASSES, LAYOUTS, ClipSpec, detect_format, read_layout
from selavi_core.catalog.schema import (
    CATALOG_COLUMNS,
    CLIPS_FILE,
    META_FILE,
    PROBE_CACHE_FILE,
    PROBE_COLUMNS,
    catalog_hash,
    load_catalog,
    media_roots,
    ok_clips,
)

__all__ = [
    "CATALOG_COLUMNS",
    "CLIPS_FILE",
    "KINETICS_SOUND_CLASSES",
    "LAYOUTS",
    "META_FILE",
    "PROBE_CACHE_FILE",
    "PROBE_COLUMNS",
    "ClipSpec",
    "IngestReport",
    "build_catalog",
    "catalog_hash",
    "detect_format",
    "load_catalog",
    "make_clip_id",
    "media_roots",
    "ok_clips",
    "read_layout",
]
