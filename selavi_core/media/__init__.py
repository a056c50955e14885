"""Media layer: probe, decode and preview video files in-process with PyAV (FFmpeg bundled in the wheel).

No subprocess per clip: ``probe`` and ``decode_clip`` open the file in this process. Heavy import
(``av``) happens when this package is imported, so CLI commands import it inside their functions.
"""

from selavi_core.media.decode import Clip, decode_clip
from selavi_core.media.preview import PreviewFiles, build_previews, ensure_preview, preview_key
from selavi_core.media.probe import MediaInfo, probe

__all__ = [
    "Clip",
    "MediaInfo",
    "PreviewFiles",
    "build_previews",
    "decode_clip",
    "ensure_preview",
    "preview_key",
    "probe",
]
