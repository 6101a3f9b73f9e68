"""Stand-in ``modeling.py``: ``VideoCLIP_XL`` with a text and a vision model (see README.md)."""

import torch.nn as nn
from utils.text_encoder import text_encoder
from utils.vision_encoder import get_vision_encoder


class VideoCLIP_XL(nn.Module):  # noqa: N801 - the name the real repository uses
    def __init__(self):
        super().__init__()
        self.text_model = text_encoder.load().float()
        self.vision_model = get_vision_encoder().float()
