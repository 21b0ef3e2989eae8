"""The transforms that turn a benchmark's stored uint8 images into network inputs, and the
normalisation constants of each data set."""

from __future__ import annotations

from collections.abc import Sequence

import torch

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


class PermutedTransform:
    """uint8 images -> x/255, normalised, flattened, then pixels reordered by ``permutation``."""

    def __init__(self, permutation: torch.Tensor, mean: float, std: float) -> None:
        self.permutation = permutation
        self.mean = mean
        self.std = std

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        flat = images.reshape(images.shape[0], -1).to(torch.float32, copy=True)
        normalised = flat.div_(255.0).sub_(self.mean).div_(self.std)  # (x / 255 - m) / s
        return normalised.index_select(1, self.permutation.to(images.device))

    def __repr__(self) -> str:
        return (
            f"PermutedTransform(size={self.permutation.numel()}, mean={self.mean}, std={self.std})"
        )


CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)
MNIST_PADDED_MEAN = (0.1,)  # MNIST statistics over 32 x 32 images padded by 2
MNIST_PADDED_STD = (0.2752,)
SVHN_MEAN = (0.4377, 0.4438, 0.4728)
SVHN_STD = (0.198, 0.201, 0.197)
FASHION_MNIST_MEAN = (0.2190,)  # also over padded 32 x 32 images
FASHION_MNIST_STD = (0.3318,)
NOTMNIST_MEAN = (0.4254,)
NOTMNIST_STD = (0.4501,)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MINIIMAGENET_SIZE = 84


class ImageTransform:
    """uint8 (B, C, H, W) -> float32: zero-pad, x/255, resize, normalise, repeat channels.

    Padding adds ``pad`` zero pixels on every side (before normalisation, as an image
    library would); ``size`` resizes to ``size`` x ``size`` bilinearly (antialiased when
    downsampling, untouched when already that size); ``channels`` repeats a single channel
    (after normalisation) that many times.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        pad: int = 0,
        channels: int | None = None,
        size: int | None = None,
    ) -> None:
        if len(mean) != len(std) or not mean or min(std) <= 0:
            raise ValueError(f"mean and std must have the same length and std > 0: {mean}, {std}")
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.pad = pad
        self.channels = channels
        self.size = size

    def output_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The shape of one transformed sample given the stored (C, H, W) ``shape``."""
        c, h, w = shape
        h, w = (
            (self.size, self.size)
            if self.size is not None
            else (h + 2 * self.pad, w + 2 * self.pad)
        )
        return (self.channels if self.channels and c == 1 else c, h, w)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(torch.float32)
        if x.ndim == 3:
            x = x.unsqueeze(1)
        if self.pad:
            x = torch.nn.functional.pad(x, (self.pad,) * 4)
        x = x / 255.0
        if self.size is not None and tuple(x.shape[-2:]) != (self.size, self.size):
            down = x.shape[-2] > self.size or x.shape[-1] > self.size
            x = torch.nn.functional.interpolate(
                x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=down
            )
        x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        if self.channels is not None and x.shape[1] == 1:
            x = x.repeat(1, self.channels, 1, 1)
        return x

    def __repr__(self) -> str:
        mean, std = self.mean.flatten().tolist(), self.std.flatten().tolist()
        return (
            f"ImageTransform(mean={mean}, std={std}, pad={self.pad}, channels={self.channels}, "
            f"size={self.size})"
        )
