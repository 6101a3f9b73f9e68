"""Stand-in vision side: a video ViT on [B, T, 3, 224, 224] with a temporal position embedding (8 frames)."""

import torch
import torch.nn as nn

FRAMES, SIZE, PATCH = 8, 224, 32


class VisionEncoder(nn.Module):
    def __init__(self, width=16, dim=16, heads=2):
        super().__init__()
        grid = (SIZE // PATCH) ** 2
        self.conv1 = nn.Conv3d(3, width, (1, PATCH, PATCH), (1, PATCH, PATCH), bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width) * 0.1)
        self.positional_embedding = nn.Parameter(torch.randn(grid + 1, width) * 0.1)
        self.temporal_positional_embedding = nn.Parameter(torch.randn(1, FRAMES, width) * 0.1)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, 1)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.randn(width, dim) * width**-0.5)

    def get_vid_features(self, input_frames):
        x = self.conv1(input_frames.permute(0, 2, 1, 3, 4))  # [B, 3, T, H, W] -> [B, C, T, h, w]
        b, c, t = x.shape[:3]
        x = x.flatten(3).permute(0, 2, 3, 1)  # [B, T, hw, C]
        x = x + self.positional_embedding[1:] + self.temporal_positional_embedding[:, :t, None, :]
        cls = (self.class_embedding + self.positional_embedding[0]).expand(b, 1, c)
        x = self.transformer(torch.cat([cls, x.reshape(b, -1, c)], dim=1))
        return self.ln_post(x[:, 0]) @ self.proj


def get_vision_encoder():
    return VisionEncoder().eval()
