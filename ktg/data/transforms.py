"""Batch transforms that run on the device holding the batch: uint8 B×C×H×W in, float B×C×S×S out.

Random parameters are drawn on the CPU from the caller's ``torch.Generator`` (a handful of numbers per
sample), so a seeded epoch gives the same batches on any device and after a resume; the pixels are then
moved by one gather or a few resampling kernels per batch.

Photos are stored at (nearly) their own resolution in :class:`~ktg.data.packed.PackedImages` (see
:mod:`ktg.data.cache`), with each image's original height and width kept beside them. The crop transforms
take those sizes (``original_sizes``, B×2 int (h, w), on the CPU) and choose their boxes in original pixel
coordinates, exactly as torchvision's ``RandomResizedCrop`` and ``Resize`` + ``CenterCrop`` do on the full
image, then resample each box with PIL's antialiased bilinear filter, which torchvision uses on PIL images.
Without ``original_sizes`` the stored size stands in for the original one.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Callable, Iterable, NamedTuple, Protocol, Sequence, Union

import torch

from ktg.data.packed import PackedImages

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: What a transform takes: dense uint8 B×C×H×W on the device, or photos of their own sizes on the host.
Images = Union[torch.Tensor, PackedImages]


class BatchTransform(Protocol):
    def __call__(
        self, images: Images, generator: torch.Generator | None = None, *, original_sizes: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Transform uint8 B×C×H×W ``images`` into float B×C×S×S, drawing randomness from ``generator``.

        Crop transforms also take :class:`~ktg.data.packed.PackedImages` (photos of their own sizes), and
        ``original_sizes`` (B×2 int, (h, w) before caching, CPU) lets them choose crops in the original
        image's coordinates; transforms that do not crop ignore it.
        """
        ...


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float32 [0, 1]."""
    return images.float().div_(255.0)


class Normalize:
    """Apply ``transform``, then subtract ``mean`` and divide by ``std`` per channel."""

    def __init__(self, transform: BatchTransform, mean: Sequence[float], std: Sequence[float]) -> None:
        self.transform = transform
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(
        self, images: Images, generator: torch.Generator | None = None, *, original_sizes: torch.Tensor | None = None
    ) -> torch.Tensor:
        out = self.transform(images, generator, original_sizes=original_sizes)
        # A blocking host-to-device copy waits for the GPU to finish every queued kernel (the previous training
        # step); these few bytes go without waiting, like the other per-batch copies.
        mean, std = (value.to(out.device, non_blocking=True) for value in (self.mean, self.std))
        return (out - mean) / std


class Identity:
    """No geometric change: only uint8 → float in [0, 1]."""

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator | None = None, *,
        original_sizes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return to_float(images)


def random_translate(
    images: torch.Tensor, pad: int, flip: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Zero-pad B×C×H×W ``images`` (any dtype) by ``pad`` pixels and cut a random H×W window of each (CIFAR's padded
    random crop), flipping each horizontally with probability 1/2 if ``flip``; same dtype and shape out."""
    b, _, h, w = images.shape
    offsets = torch.randint(0, 2 * pad + 1, (2, b), generator=generator)
    flips = torch.rand(b, generator=generator) < 0.5 if flip else torch.zeros(b, dtype=torch.bool)
    offsets, flips = offsets.to(images.device, non_blocking=True), flips.to(images.device, non_blocking=True)
    padded = torch.nn.functional.pad(images, (pad,) * 4).permute(0, 2, 3, 1)  # B×H'×W'×C
    steps_y = torch.arange(h, device=images.device)
    steps_x = torch.arange(w, device=images.device)
    rows = offsets[0, :, None] + steps_y
    cols = offsets[1, :, None] + torch.where(flips[:, None], w - 1 - steps_x, steps_x)
    batch = torch.arange(b, device=images.device)[:, None, None]
    window = padded[batch, rows[:, :, None], cols[:, None, :]]  # B×H×W×C
    return window.permute(0, 3, 1, 2).contiguous()


class RandomTranslate:
    """Zero-pad by ``pad`` pixels and cut a random window of the original size (CIFAR's padded random crop),
    optionally flipping each image horizontally with probability 1/2 (:func:`random_translate`)."""

    def __init__(self, pad: int, flip: bool) -> None:
        self.pad = pad
        self.flip = flip

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator | None = None, *,
        original_sizes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return to_float(random_translate(images, self.pad, self.flip, generator))


def stored_sizes(images: Images) -> torch.Tensor:
    """B×2 float64 (h, w) on the CPU of the images as stored."""
    if isinstance(images, PackedImages):
        return images.sizes.to(torch.float64)
    return torch.tensor(images.shape[-2:], dtype=torch.float64).expand(images.shape[0], 2)


def _sizes(images: Images, original_sizes: torch.Tensor | None) -> torch.Tensor:
    """B×2 float64 (h, w) on the CPU: the original sizes, or the stored size of every image."""
    if original_sizes is None:
        return stored_sizes(images)
    if original_sizes.shape != (len(images), 2):
        raise ValueError(f"original_sizes must be B×2 for {len(images)} images, got {tuple(original_sizes.shape)}")
    return original_sizes.to("cpu", torch.float64)


class _Axis(NamedTuple):
    """How one axis of every image is resampled, in stored pixels (B float64 each, CPU): output pixel i samples
    around ``start + (i + 0.5) · step`` from pixels in [lo, hi), and pixels [first, first + count) are fetched."""

    start: torch.Tensor
    step: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor
    first: torch.Tensor
    count: torch.Tensor


def _axis(box_start: torch.Tensor, box_length: torch.Tensor, within_start: torch.Tensor, within_length: torch.Tensor,
          stored: torch.Tensor, size: int) -> _Axis:
    """One axis of :func:`resample_boxes` from fractions of the image to stored pixels."""
    start, step = box_start * stored, box_length * stored / size
    # Fractions of whole pixels come back a hair off (49.999…); a pixel that far inside is not taken.
    lo = torch.floor(within_start * stored + 1e-6).clamp(min=0)
    hi = torch.minimum(torch.ceil((within_start + within_length) * stored - 1e-6), stored)
    support = step.clamp(min=1.0)
    first = torch.maximum(torch.floor(start + 0.5 * step - support + 0.5), lo)
    last = torch.minimum(torch.floor(start + (size - 0.5) * step + support + 0.5), hi)
    return _Axis(start, step, lo, hi, first, (last - first).clamp(min=1))


def _taps(axis: _Axis, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """PIL's bilinear filter along one axis as taps on ``device``: (index B×size×K int64 into the fetched
    pixels [first, first + count), weight B×size×K float32 summing to 1 over K).

    A triangle of half-width s covers an open interval of length 2s, so ⌈2s⌉ taps from PIL's first one,
    ⌊centre − s + 0.5⌋, hold every pixel it weighs; K is that for the widest filter of the batch."""
    taps = math.ceil(2 * max(1.0, float(axis.step.max())))
    start, step, lo, hi, first, count = (value.to(device, torch.float32, non_blocking=True)[:, None, None]
                                         for value in axis)
    support = step.clamp(min=1.0)  # the filter widens with the shrink factor: that is the antialiasing
    centres = start + (torch.arange(size, device=device)[:, None] + 0.5) * step  # B×size×1
    pixels = torch.floor(centres - support + 0.5) + torch.arange(taps, device=device)  # B×size×K
    weight = (1 - (pixels + 0.5 - centres).abs() / support).clamp(min=0) * ((pixels >= lo) & (pixels < hi))
    index = (pixels - first).clamp(min=0).minimum(count - 1).long()
    return index, weight / weight.sum(dim=-1, keepdim=True)


def _resample_rows(pixels: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Resample the rows of contiguous B×H×W×C ``pixels`` with the taps of :func:`_taps`: float B×size×W×C.

    Each tap copies whole rows (one ``index_select`` of the batch's B·H rows) and adds them weighted, so the
    work is a few vectorised passes over B×size×W×C on any device."""
    b, h, w, c = pixels.shape
    rows = pixels.view(b * h, w * c)
    first_row = (torch.arange(b, device=pixels.device) * h)[:, None]
    out = None
    for k in range(index.shape[2]):
        selected = rows.index_select(0, (index[:, :, k] + first_row).view(-1))
        tap_weight = weight[:, :, k].reshape(-1, 1)
        # The first product is float whatever the pixels' type; the others add into it.
        out = torch.mul(selected, tap_weight) if out is None else out.addcmul_(selected, tap_weight)
    return out.view(b, index.shape[1], w, c)


#: Most pixels one resampling pass holds at once per batch part (B×C×H×W of the larger of the fetched regions
#: and the output, 256 MiB as float32); larger batches are resampled in parts.
RESAMPLE_CHUNK = 2**26


def resample_boxes(images: Images, boxes: torch.Tensor, flips: torch.Tensor | None, size: int, *,
                   within: torch.Tensor | None = None) -> torch.Tensor:
    """Cut one box out of every image and resize it to size×size: float B×C×size×size in [0, 1].

    Args:
        images: uint8 B×C×H×W on any device, or :class:`~ktg.data.packed.PackedImages` (the result is then
            on their device, and only the pixels under the boxes are copied there).
        boxes: B×4 float (top, left, height, width) as fractions of each image's height and width, CPU. A
            box in original pixels divided by the original size is the same box in the stored image.
        flips: B bool (CPU), mirror the box horizontally; ``None`` for no flips.
        size: side of the output.
        within: B×4 fractions like ``boxes``: the part of the image whose pixels the filter may use. Default:
            the box itself, as cropping and then resizing does (torchvision's ``resized_crop``); resizing the
            whole image and then cropping (``Resize`` + ``CenterCrop``) passes the whole image.

    The filter is PIL's bilinear one, as torchvision applies it to PIL images: output pixel i of a box of
    length L samples around ``(i + 0.5) · L / size`` with a triangle whose half-width is max(1, L / size)
    pixels, normalised to sum 1, so shrinking averages every pixel it covers (antialiasing). Rows, then
    columns: per filter tap and axis, one row copy and one multiply-add for the whole batch.
    """
    boxes = boxes.to(torch.float64)
    within = boxes if within is None else within.to(torch.float64)
    stored = stored_sizes(images)
    rows = _axis(boxes[:, 0], boxes[:, 2], within[:, 0], within[:, 2], stored[:, 0], size)
    cols = _axis(boxes[:, 1], boxes[:, 3], within[:, 1], within[:, 3], stored[:, 1], size)
    if not isinstance(images, PackedImages):  # already on the device: resample from whole images
        rows = rows._replace(first=torch.zeros_like(rows.first), count=stored[:, 0])
        cols = cols._replace(first=torch.zeros_like(cols.first), count=stored[:, 1])
    device = images.device
    per_image = 3 * max(int(rows.count.max()), size) * max(int(cols.count.max()), size)
    chunk = max(1, RESAMPLE_CHUNK // per_image)
    parts = []
    for begin in range(0, len(images), chunk):
        part = slice(begin, begin + chunk)
        part_rows, part_cols = (_Axis(*(value[part] for value in axis)) for axis in (rows, cols))
        if isinstance(images, PackedImages):
            pixels = images[part].regions(*(value.long() for value in (part_rows.first, part_cols.first,
                                                                           part_rows.count, part_cols.count)))
        else:
            pixels = images[part].permute(0, 2, 3, 1).contiguous()
        row_index, row_weight = _taps(part_rows, size, device)
        col_index, col_weight = _taps(part_cols, size, device)
        if flips is not None:
            flipped = flips[part].to(device, non_blocking=True)[:, None, None]
            col_index = torch.where(flipped, col_index.flip(1), col_index)
            col_weight = torch.where(flipped, col_weight.flip(1), col_weight)
        resized_rows = _resample_rows(pixels, row_index, row_weight / 255.0)  # B×size×W×C
        resized = _resample_rows(resized_rows.transpose(1, 2).contiguous(), col_index, col_weight)  # B×x×y×C
        parts.append(resized.permute(0, 3, 2, 1).contiguous())
    return parts[0] if len(parts) == 1 else torch.cat(parts)


class RandomResizedCrop:
    """torchvision's ``RandomResizedCrop(size, scale, ratio)`` (bilinear) plus an optional horizontal flip, batched.

    Per image, up to 10 tries draw an area fraction uniformly from ``scale`` and an aspect ratio (width/height)
    log-uniformly from ``ratio``, in original pixels, rounding the box's sides; the first box that fits is
    placed uniformly at random, and when none fits the central crop clamped to ``ratio`` is taken. Then the
    box is resized to size×size with PIL's antialiased bilinear filter and flipped with probability 1/2 if
    ``flip``. For the same box, the result differs from torchvision's ``resized_crop`` on the original photo
    by a mean absolute error of about 0.001 in [0, 1] units (PIL rounds to whole levels between its passes)
    when the photo is stored at full resolution; from a stored copy at least :attr:`detail_side` on the
    shorter side, every box still spans ``size`` stored pixels, so no crop is softer than torchvision's.
    """

    def __init__(
        self,
        size: int,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip: bool = True,
        tries: int = 10,
    ) -> None:
        if not (0 < scale[0] <= scale[1] <= 1 and 0 < ratio[0] <= ratio[1]):
            raise ValueError(f"need 0 < scale[0] ≤ scale[1] ≤ 1 and 0 < ratio[0] ≤ ratio[1], got {scale}, {ratio}")
        self.size = size
        self.scale = scale
        self.ratio = ratio
        self.flip = flip
        self.tries = tries

    @property
    def detail_side(self) -> int:
        """The shorter side from which the smallest box this transform can draw still spans ``size`` pixels.

        A box of area fraction a and aspect ratio r (width/height) of an image with shorter side s and longer
        side l ≥ s has sides √(a·s·l·r) and √(a·s·l/r), never less than s·√(a·min(r, 1/r)); with a ≥ scale[0]
        and r within ``ratio`` that is s·√(scale[0]·min(ratio[0], 1/ratio[1])) (903 pixels for the reference
        recipe at 224). Stored at that side, a photo loses nothing a crop can show.
        """
        return math.ceil(self.size / math.sqrt(self.scale[0] * min(self.ratio[0], 1 / self.ratio[1])))

    def sample_boxes(self, sizes: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Boxes B×4 int64 (top, left, height, width) in pixels of images of ``sizes`` (B×2 (h, w), CPU)."""
        sizes = sizes.to(torch.float64)
        h, w = sizes[:, 0:1], sizes[:, 1:2]
        b = sizes.shape[0]
        area = h * w * torch.empty(b, self.tries, dtype=torch.float64).uniform_(*self.scale, generator=generator)
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        log_aspect = torch.empty(b, self.tries, dtype=torch.float64).uniform_(log_lo, log_hi, generator=generator)
        aspect = torch.exp(log_aspect)
        crop_w = torch.round(torch.sqrt(area * aspect))
        crop_h = torch.round(torch.sqrt(area / aspect))
        fits = (crop_w > 0) & (crop_w <= w) & (crop_h > 0) & (crop_h <= h)
        first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # the first try that fits
        crop_w, crop_h = crop_w.gather(1, first), crop_h.gather(1, first)
        # Fallback as in torchvision: the whole image, cut to the nearest allowed aspect ratio, centred.
        in_ratio = w / h
        fallback_w = torch.where(in_ratio > self.ratio[1], torch.round(h * self.ratio[1]), w)
        fallback_h = torch.where(in_ratio < self.ratio[0], torch.round(w / self.ratio[0]), h)
        found = fits.any(dim=1, keepdim=True)
        crop_w = torch.where(found, crop_w, fallback_w)
        crop_h = torch.where(found, crop_h, fallback_h)
        u = torch.rand(b, 2, dtype=torch.float64, generator=generator)
        top = torch.where(found, torch.floor(u[:, 0:1] * (h - crop_h + 1)), torch.floor((h - crop_h) / 2))
        left = torch.where(found, torch.floor(u[:, 1:2] * (w - crop_w + 1)), torch.floor((w - crop_w) / 2))
        return torch.cat([top, left, crop_h, crop_w], dim=1).long()

    def __call__(
        self, images: Images, generator: torch.Generator | None = None, *, original_sizes: torch.Tensor | None = None
    ) -> torch.Tensor:
        sizes = _sizes(images, original_sizes)
        boxes = self.sample_boxes(sizes, generator)
        flips = torch.rand(len(images), generator=generator) < 0.5 if self.flip else None
        return resample_boxes(images, boxes / sizes.repeat(1, 2), flips, self.size)


class ResizeCenterCrop:
    """torchvision's ``Resize(resize)`` (shorter side → ``resize``) + ``CenterCrop(size)``, batched.

    The crop box is computed in original pixels with torchvision's rounding, then resampled from the stored
    image in one pass of PIL's antialiased bilinear filter, which near the crop's edges also reads the pixels
    just outside it, as resizing the whole image first does. Against torchvision on PIL images (decode →
    Resize → CenterCrop → ToTensor) the mean absolute difference is about 0.001 in [0, 1] units on real
    photos (``experiments/benchmark_data.py --photos``; ``tests/test_transforms.py`` holds it ≤ 0.005).
    """

    def __init__(self, resize: int, size: int) -> None:
        if resize < size:
            raise ValueError(f"the resized shorter side ({resize}) must be at least the crop size ({size})")
        self.resize = resize
        self.size = size

    @property
    def detail_side(self) -> int:
        """The shorter side from which the resize only ever shrinks: ``resize``."""
        return self.resize

    def boxes(self, sizes: torch.Tensor) -> torch.Tensor:
        """Crop boxes B×4 float64 (top, left, height, width) as fractions of images of ``sizes`` (B×2 (h, w))."""
        sizes = sizes.to(torch.float64)
        h, w = sizes[:, 0], sizes[:, 1]
        short, long = torch.minimum(h, w), torch.maximum(h, w)
        new_long = torch.floor(self.resize * long / short)
        new_h = torch.where(h <= w, torch.full_like(h, self.resize), new_long)
        new_w = torch.where(h <= w, new_long, torch.full_like(w, self.resize))
        # torchvision's CenterCrop rounds the offset half to even: int(round((H - S) / 2)).
        top = torch.round((new_h - self.size) / 2)
        left = torch.round((new_w - self.size) / 2)
        return torch.stack([top / new_h, left / new_w, self.size / new_h, self.size / new_w], dim=1)

    def __call__(
        self, images: Images, generator: torch.Generator | None = None, *, original_sizes: torch.Tensor | None = None
    ) -> torch.Tensor:
        whole = torch.tensor([[0.0, 0.0, 1.0, 1.0]], dtype=torch.float64).expand(len(images), 4)
        return resample_boxes(images, self.boxes(_sizes(images, original_sizes)), None, self.size, within=whole)


class ResizeSquare:
    """The whole image resized to size×size, its aspect ratio not kept (torchvision's ``Resize((size, size))``),
    with PIL's antialiased bilinear filter, batched: for images that must be seen whole (digits, text, charts)."""

    def __init__(self, size: int) -> None:
        self.size = size

    @property
    def detail_side(self) -> int:
        """The shorter side from which the resize only ever shrinks: ``size``."""
        return self.size

    def __call__(
        self, images: Images, generator: torch.Generator | None = None, *, original_sizes: torch.Tensor | None = None
    ) -> torch.Tensor:
        whole = torch.tensor([[0.0, 0.0, 1.0, 1.0]], dtype=torch.float64).expand(len(images), 4)
        return resample_boxes(images, whole, None, self.size)


class ResizePadCrop:
    """:class:`ResizeSquare` (size), then CIFAR's padded random crop (:func:`random_translate` by ``pad``
    pixels), flipped with probability 1/2 if ``flip``."""

    def __init__(self, size: int, pad: int, flip: bool) -> None:
        self.resize = ResizeSquare(size)
        self.pad = pad
        self.flip = flip

    @property
    def detail_side(self) -> int:
        return self.resize.detail_side

    def __call__(
        self, images: Images, generator: torch.Generator | None = None, *, original_sizes: torch.Tensor | None = None
    ) -> torch.Tensor:
        return random_translate(self.resize(images, original_sizes=original_sizes), self.pad, self.flip, generator)


def detail_side(transforms: Iterable[BatchTransform]) -> int:
    """The shorter side at which to store photos for ``transforms`` (transforms that resample photos, normalised or
    not): the largest of their :attr:`detail_side` values, so that no crop has to enlarge the stored photo more
    than the original one."""
    sides = []
    for transform in transforms:
        inner = transform.transform if isinstance(transform, Normalize) else transform
        if not isinstance(inner, (RandomResizedCrop, ResizeCenterCrop, ResizeSquare, ResizePadCrop)):
            raise TypeError(f"{type(inner).__name__} does not resample photos; it has no detail side")
        sides.append(inner.detail_side)
    return max(sides)


def eval_resize(image_size: int) -> int:
    """The shorter side the evaluation resize targets: 256 for 224-pixel inputs, in proportion otherwise."""
    return round(image_size * 256 / 224)


def crop_transforms(
    image_size: int,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    normalize: bool = False,
) -> tuple[BatchTransform, BatchTransform]:
    """(train, eval) transforms of the ImageNet kind: RandomResizedCrop(image_size, scale, ratio) + flip;
    Resize(eval_resize(image_size)) + CenterCrop(image_size); ImageNet mean/std if ``normalize``."""
    train: BatchTransform = RandomResizedCrop(image_size, scale=scale, ratio=ratio, flip=True)
    evaluate: BatchTransform = ResizeCenterCrop(eval_resize(image_size), image_size)
    if normalize:
        train = Normalize(train, IMAGENET_MEAN, IMAGENET_STD)
        evaluate = Normalize(evaluate, IMAGENET_MEAN, IMAGENET_STD)
    return train, evaluate


def reference_transforms(image_size: int = 224, *, normalize: bool = False) -> tuple[BatchTransform, BatchTransform]:
    """The reference recipe of the ensemble-KTG code (docs/method.md#reference-protocol): RandomResizedCrop(224,
    ratio=(1, 1.3)) + flip for training, Resize(256) + CenterCrop(224) for evaluation, no normalisation (other
    sizes scale 256 in proportion)."""
    return crop_transforms(image_size, ratio=(1.0, 1.3), normalize=normalize)


def square_transforms(
    image_size: int, *, pad: int | None = None, flip: bool = False, normalize: bool = False
) -> tuple[BatchTransform, BatchTransform]:
    """(train, eval) transforms that keep the whole image: both resize it to image_size × image_size
    (:class:`ResizeSquare`); training then cuts a window padded by ``pad`` pixels (default image_size / 8, at
    least 1; 0 trains on the resized image as it is), flipped if ``flip``; ImageNet mean/std if ``normalize``."""
    pad = max(1, image_size // 8) if pad is None else pad
    evaluate: BatchTransform = ResizeSquare(image_size)
    train: BatchTransform = ResizePadCrop(image_size, pad, flip) if pad > 0 else ResizeSquare(image_size)
    if normalize:
        train = Normalize(train, IMAGENET_MEAN, IMAGENET_STD)
        evaluate = Normalize(evaluate, IMAGENET_MEAN, IMAGENET_STD)
    return train, evaluate


#: The augmentation recipes of photo datasets, ``--dataset-option augment=NAME``: ``fn(image_size, *,
#: normalize) -> (train, eval)`` transforms.
AUGMENTATIONS: dict[str, Callable[..., tuple[BatchTransform, BatchTransform]]] = {
    # RandomResizedCrop(S) + flip; Resize(S·256/224) + CenterCrop(S): torchvision's ImageNet defaults.
    "imagenet": crop_transforms,
    # The same with aspect ratios 1-1.3, as the ensemble-KTG code trains on birds, dogs and cars.
    "finegrained": reference_transforms,
    # The whole image at S×S, a padded random crop with (or without) a horizontal flip: CIFAR's recipe, for
    # images whose framing carries meaning (digits, text, charts, icons), and without a flip where left and
    # right differ.
    "pad-crop-flip": partial(square_transforms, flip=True),
    "pad-crop": partial(square_transforms, flip=False),
    # The whole image at S×S, nothing random.
    "none": partial(square_transforms, pad=0),
}
