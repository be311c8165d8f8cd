"""How a new image becomes a model input exactly as a dataset's test images did.

A dataset stores every image decoded as RGB, photos at their own shape in the decode-once cache (reduced
only past a size, see :mod:`ktg.data.cache`), the images of the other datasets squashed to a square in
memory, together with its original size, and its evaluation transform turns a batch of those into model
inputs. :class:`Preprocessing` is that pair, for images that are not in the dataset: it decodes with the
very function the cache decodes with, so an image file of the test split becomes exactly the tensor
``ktg eval`` fed the model.

Each dataset's record (:class:`ktg.data.DatasetRecord`) names, beside its loader, a function that builds its
:class:`Preprocessing` from the options saved with a run; its loader takes the evaluation transform from
that same function, so the two cannot drift apart. :meth:`DataSource.preprocessing <ktg.data.DataSource>`
gives it for a run's data without loading them: predicting needs neither the training images nor their cache.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from ktg.data.cache import DECODE_ERRORS, decode_image, decode_photo, decode_photo_file, decode_resized
from ktg.data.packed import PackedImages
from ktg.data.transforms import BatchTransform, Identity, Images, Normalize, ResizeCenterCrop, ResizeSquare
from ktg.errors import KTGError

#: What :class:`Preprocessing` accepts as one image: a file, a PIL image, or a uint8 tensor C×H×W or H×W.
ImageInput = str | os.PathLike | Image.Image | torch.Tensor


class UnreadableImageError(KTGError):
    """An image that cannot be decoded (not an image, truncated, too large); ``name`` says which."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"cannot read {name}: {reason}")
        self.name = name
        self.reason = reason


def decode_file(path: str | os.PathLike, size: int, photos: bool = False) -> tuple[np.ndarray, tuple[int, int]]:
    """The dataset's decoding of the image file at ``path`` (:func:`~ktg.data.cache.decode_photo_file` for
    ``photos``, else :func:`~ktg.data.cache.decode_resized`); a file PIL cannot decode raises
    :class:`UnreadableImageError` naming it."""
    try:
        with warnings.catch_warnings():
            # Past Image.MAX_IMAGE_PIXELS PIL warns, past twice that it refuses: one message, not a warning too.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return (decode_photo_file if photos else decode_resized)(path, size)
    except Image.UnidentifiedImageError:
        raise UnreadableImageError(str(path), "not an image file that PIL can decode") from None
    except FileNotFoundError:
        raise UnreadableImageError(str(path), "no such file") from None
    except Image.DecompressionBombError as error:
        raise UnreadableImageError(str(path), f"{error} (raise PIL.Image.MAX_IMAGE_PIXELS if you trust "
                                   "the file)") from None
    except DECODE_ERRORS as error:
        raise UnreadableImageError(str(path), str(error) or type(error).__name__) from None


def _to_pil(image: torch.Tensor, name: str) -> Image.Image:
    channels_first = image.dim() == 3 and image.shape[0] in (1, 3, 4)
    if image.dtype != torch.uint8 or not (image.dim() == 2 or channels_first):
        raise KTGError(f"{name}: expected a uint8 tensor C×H×W (C = 1, 3 or 4) or H×W, got "
                       f"{tuple(image.shape)} {image.dtype}")
    pixels = image.cpu().numpy()
    if pixels.ndim == 3:
        pixels = pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)
    return Image.fromarray(np.ascontiguousarray(pixels))


@dataclass(frozen=True)
class Preprocessing:
    """A dataset's evaluation pipeline for single images.

    Attributes:
        stored_size: the side of the squares the dataset stores its images as, or for ``photos`` the longest
            shorter side it keeps (the cache size of photo datasets; the image size of the others).
        transform: the dataset's evaluation transform (stored images and original sizes → model input).
        photos: images keep their shape, as :class:`~ktg.data.packed.PackedImages` (photo datasets).
    """

    stored_size: int
    transform: BatchTransform
    photos: bool = False

    def decode(self, image: ImageInput, name: str | None = None) -> tuple[np.ndarray, tuple[int, int]]:
        """One image as the dataset stores it: (uint8 3×S×S, or H×W×3 for ``photos``; original (h, w)).
        ``name`` is used in messages."""
        if isinstance(image, (str, os.PathLike)):
            return decode_file(image, self.stored_size, self.photos)
        name = name or "the image"
        if isinstance(image, torch.Tensor):
            image = _to_pil(image, name)
        if not isinstance(image, Image.Image):
            raise KTGError(f"{name}: expected a file path, a PIL image or a uint8 tensor, got {type(image).__name__}")
        try:
            return (decode_photo if self.photos else decode_image)(image, self.stored_size)
        except DECODE_ERRORS as error:
            raise UnreadableImageError(name, str(error) or type(error).__name__) from None

    def stack(self, images: Sequence[ImageInput] | ImageInput) -> tuple[Images, torch.Tensor]:
        """Decode ``images`` (one, a sequence, or a uint8 B×C×H×W tensor): (uint8 B×3×S×S, or packed
        :class:`~ktg.data.packed.PackedImages` for ``photos``; original sizes B×2)."""
        if isinstance(images, torch.Tensor) and images.dim() == 4:
            images = list(images)
        elif isinstance(images, (str, os.PathLike, Image.Image, torch.Tensor)):
            images = [images]
        if len(images) == 0:
            raise KTGError("no images to preprocess")
        return self.collate([self.decode(image, f"image {i}") for i, image in enumerate(images)])

    def collate(self, decoded: Sequence[tuple[np.ndarray, tuple[int, int]]]) -> tuple[Images, torch.Tensor]:
        """Decoded images (:meth:`decode`) as one batch: (uint8 B×3×S×S, or packed for ``photos``; original
        sizes B×2 int64)."""
        arrays = [array for array, _ in decoded]
        pixels = PackedImages.pack(arrays) if self.photos else torch.from_numpy(np.stack(arrays))
        return pixels, torch.tensor([size for _, size in decoded], dtype=torch.int64)

    def apply(self, pixels: Images, original_sizes: torch.Tensor) -> torch.Tensor:
        """The evaluation transform of decoded images (on their device): float B×3×S'×S' model inputs."""
        return self.transform(pixels, original_sizes=original_sizes)

    def __call__(self, images: Sequence[ImageInput] | ImageInput, device: torch.device | str = "cpu") -> torch.Tensor:
        """Model inputs (float B×3×S'×S' on ``device``) of files, PIL images or uint8 tensors: exactly what the
        dataset's evaluation would feed the model for the same pictures."""
        pixels, sizes = self.stack(images)
        return self.apply(pixels.to(device), sizes)

    def describe(self) -> dict[str, Any]:
        """The pipeline in plain steps, for whoever feeds an exported model without ktg: a list of operations
        (``steps``), a one-line ``summary`` and the equivalent torchvision transform (``torchvision``).

        ktg itself resizes from the stored image in original-image coordinates; the steps below resize the
        original image directly, as torchvision does, which gives the same crop up to resampling (a mean
        absolute difference of about 0.001 of the [0, 1] range for photos).
        """
        steps: list[dict[str, Any]] = [{"op": "decode", "mode": "RGB", "note": "grey, CMYK, RGBA and palette images "
                                        "converted to RGB; alpha dropped"}]
        torchvision: list[str] = []
        transform, normalize = self.transform, None
        if isinstance(transform, Normalize):
            transform, normalize = transform.transform, transform
        if isinstance(transform, (Identity, ResizeSquare)):
            side = transform.size if isinstance(transform, ResizeSquare) else self.stored_size
            steps.append({"op": "resize", "size": [side, side], "interpolation": "bilinear", "antialias": True})
            torchvision.append(f"Resize(({side}, {side}))")
            text = [f"resize to {side}×{side} (bilinear)"]
        elif isinstance(transform, ResizeCenterCrop):
            steps.append({"op": "resize", "shorter_side": transform.resize, "interpolation": "bilinear",
                          "antialias": True})
            steps.append({"op": "center_crop", "size": [transform.size, transform.size]})
            torchvision += [f"Resize({transform.resize})", f"CenterCrop({transform.size})"]
            text = [f"resize the shorter side to {transform.resize} (bilinear)",
                    f"center-crop {transform.size}×{transform.size}"]
        else:
            raise TypeError(f"no description of the evaluation transform {type(transform).__name__}")
        steps.append({"op": "to_float", "divide_by": 255, "layout": "N×3×H×W, RGB"})
        torchvision.append("ToTensor()")
        text.append("divide by 255 (N×3×H×W, RGB)")
        if normalize is not None:
            mean, std = normalize.mean.flatten().tolist(), normalize.std.flatten().tolist()
            steps.append({"op": "normalize", "mean": mean, "std": std})
            torchvision.append(f"Normalize(mean={mean}, std={std})")
            text.append("subtract the mean and divide by the std per channel")
        return {"steps": steps, "summary": "RGB, " + ", ".join(text),
                "torchvision": f"transforms.Compose([{', '.join(torchvision)}])"}
