"""Stage clip_captions -> clusters -> video_captions: an LLM merges captions.

The stage's library API, importable from the package as before the layout move (``from lovr_hf.merge import
MergeConfig, merge``); everything else is imported from the module it lives in.
"""

from lovr_hf.merge.config import MergeConfig
from lovr_hf.merge.stage import merge

__all__ = ["MergeConfig", "merge"]
