"""Random distortions of training images, a whole batch at once on the training device. Each
kind includes the ones before it: `translate` (whole pixels, exact), `affine` (rotation, scale,
shear, sub-pixel shift), `elastic` (then Simard et al. 2003's smoothed noise field). `max_stroke`
> 0, with any kind, first thickens or thins the strokes (pens from a fine liner to a marker).

Not torchvision's RandomAffine or ElasticTransform: they draw one distortion per call from
torch's global generator; here every image has its own, in one `grid_sample`, drawn from the
generator `datamodule.TensorBatches` seeds: a resumed run draws what the uninterrupted one would."""

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

AUGMENTS = ("none", "translate", "affine", "elastic")
SIDE = 28  # MNIST images are SIDE x SIDE pixels


@dataclass
class Augment:
    """Distort a batch of images (B, 28, 28) in [0, 1]; the result stays in [0, 1]."""

    kind: str = "none"
    max_shift: float = 2.0  # pixels
    max_rotation: float = 10.0  # degrees
    max_scale: float = 0.1
    max_shear: float = 10.0  # degrees
    elastic_alpha: float = 34.0
    elastic_sigma: float = 4.0
    max_stroke: float = 0.0  # pixels of stroke width, each way

    @property
    def enabled(self) -> bool:
        return self.kind != "none" or self.max_stroke > 0

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        batch, device = len(images), images.device

        def uniform(limit: float) -> torch.Tensor:  # (batch,) values in [-limit, limit]
            return (2 * torch.rand(batch, generator=generator, device=device) - 1) * limit

        if self.max_stroke > 0:  # drawn only then, so runs without it keep their distortions
            # A 3x3 dilation (erosion) adds (takes) a pixel each side: a width of +2 (-2) pixels
            # thickens (thins) each image's strokes by a whole one; less blends with the image.
            part = (uniform(self.max_stroke) / 2).view(-1, 1, 1)
            grown = F.max_pool2d(images.unsqueeze(1), 3, stride=1, padding=1).squeeze(1)
            shrunk = -F.max_pool2d(-images.unsqueeze(1), 3, stride=1, padding=1).squeeze(1)
            images = images + part.clamp(min=0) * (grown - images)
            images = images + (-part).clamp(min=0) * (shrunk - images)
        if self.kind == "none":
            return images
        if self.kind == "translate":  # whole pixels, each of -most..most equally likely
            most = int(self.max_shift)
            shift = -torch.randint(-most, most + 1, (batch, 2), generator=generator, device=device)
            theta = torch.eye(2, device=device).expand(batch, 2, 2)
        else:
            shift = torch.stack([uniform(self.max_shift), uniform(self.max_shift)], 1)
            angle = uniform(math.radians(self.max_rotation))
            shear = uniform(math.radians(self.max_shear))
            scale = 1 + uniform(self.max_scale)
            cos, sin, tan = angle.cos(), angle.sin(), shear.tan()
            # rotation @ shear @ scale, as the map from output to input coordinates
            theta = torch.stack(
                [torch.stack([cos, cos * tan - sin], 1), torch.stack([sin, sin * tan + cos], 1)], 1
            ) / scale.view(batch, 1, 1)
        # A shift of d pixels is 2d / SIDE in grid_sample's [-1, 1] coordinates.
        affine = torch.cat([theta, (2 / SIDE) * shift.unsqueeze(2)], 2)
        grid = F.affine_grid(affine, [batch, 1, SIDE, SIDE], align_corners=False)
        if self.kind == "elastic":  # smoothed noise times alpha, in grid units
            noise = 2 * torch.rand(batch * 2, SIDE, SIDE, generator=generator, device=device) - 1
            smooth = smoothing(self.elastic_sigma, device)  # along columns, then along rows
            field = (smooth @ noise @ smooth.T).view(batch, 2, SIDE, SIDE).permute(0, 2, 3, 1)
            grid = grid + field * (2 * self.elastic_alpha / SIDE)
        mode = "nearest" if self.kind == "translate" else "bilinear"  # nearest: exact pixels
        warped = F.grid_sample(images.unsqueeze(1), grid, mode, "zeros", align_corners=False)
        return warped.squeeze(1).clamp_(0, 1)


@functools.cache
def smoothing(sigma: float, device: torch.device) -> torch.Tensor:
    """The (28, 28) matrix of a 1-D Gaussian blur with zero padding: as a matrix product it
    costs a fraction of a convolution with a kernel of several sigma."""
    x = torch.arange(SIDE, dtype=torch.float32)
    weights = torch.exp(-0.5 * ((x.view(-1, 1) - x) / sigma) ** 2)
    radius = max(1, math.ceil(3 * sigma))
    norm = weights[0, : radius + 1].sum() * 2 - 1  # a full kernel's sum, truncated at 3σ
    weights[(x.view(-1, 1) - x).abs() > radius] = 0
    return (weights / norm).to(device)
