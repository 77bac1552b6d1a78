"""Image operations on uint8 / float tensors shared by every data source."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 (N, C, H, W) images to (size, size) with antialiased bilinear interpolation.

    This stands in for torchvision's ``Resize((S, S))`` on PIL images (bilinear, antialiased);
    values agree to within rounding. A no-op when the images already have that size.
    """
    if images.shape[-2:] == (size, size):
        return images
    out = []
    for chunk in images.split(4096):  # bounded memory on large sets
        f = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(f.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)
