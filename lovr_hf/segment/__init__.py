"""Stage videos -> clips: scene detection and cutting.

The stage's library API, importable from the package as before the layout move (``from lovr_hf.segment import
SegmentConfig, scan_videos, segment``); everything else is imported from the module it lives in.
"""

from lovr_hf.segment.stage import SegmentConfig, scan_videos, segment

__all__ = ["SegmentConfig", "scan_videos", "segment"]
