"""Stage clips -> clip_captions: a vision-language model captions every clip.

The stage's library API, importable from the package as before the layout move (``from lovr_hf.caption import
CaptionConfig, caption``); everything else is imported from the module it lives in.
"""

from lovr_hf.caption.config import CaptionConfig
from lovr_hf.caption.stage import caption

__all__ = ["CaptionConfig", "caption"]
