"""A folder of images in torchvision's ``ImageFolder`` layout, read as 8-bit intensities.

``ROOT/CLASS/IMAGE.png``: every image file (the extensions torchvision's ``ImageFolder`` takes)
under a class folder is one datum; the classes, in sorted order, are its label. All images must
have one size and be grayscale (``L``, or 1-bit, read as 0/255) or colour (``RGB``, or a palette
image, converted); a datum is the image's pixels, 0..255 (256 levels), row by row (channels last).

Each image's size is read from its header and the whole data set's bytes checked against this
machine's memory before any pixel is decoded; Pillow's decompression-bomb guard is an error, not
a warning; a file Pillow cannot decode (truncated, not an image) is one line naming it. The
folder's SHA-256 is taken over each image's relative path and bytes, in sorted order, of the
bytes decoded.
"""
from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path
from typing import List, Tuple

import numpy as np

from zoo.core.errors import ZooError

__all__ = ["IMAGE_EXTENSIONS", "read_image_folder"]

#: torchvision's ``IMG_EXTENSIONS``: the files ``ImageFolder`` reads.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def read_image_folder(root: Path) -> Tuple[np.ndarray, np.ndarray, Tuple[int, ...], str]:
    """``(images uint8 [n, H, W] or [n, H, W, 3], labels [n], image shape, SHA-256)`` of an image folder."""
    from PIL import Image
    from zoo.core.memory import human_bytes, memory_bytes
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files: List[Tuple[Path, int]] = []
    for label, name in enumerate(classes):
        files += [(f, label) for f in sorted((root / name).rglob("*"))
                  if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith(".")]
    if not files:
        raise ZooError(f"{root} holds no images in the ImageFolder layout (ROOT/CLASS/IMAGE.png, extensions "
                       f"{', '.join(IMAGE_EXTENSIONS)})")
    digest = hashlib.sha256()
    images, shape, mode = [], None, None
    for f, _ in files:
        raw = f.read_bytes()
        digest.update(str(f.relative_to(root)).encode() + b"\0" + hashlib.sha256(raw).digest())
        image = _open(f, raw, Image)
        size_mode = (image.size, _mode(image, f))
        if shape is None:
            shape, mode = size_mode
            width, height = shape
            per_image = width * height * (3 if mode == "RGB" else 1)
            if per_image * len(files) > memory_bytes():
                raise ZooError(f"{root}: {len(files)} images of {width}x{height} {mode} take "
                               f"{human_bytes(per_image * len(files))}, more than this machine's "
                               f"{human_bytes(memory_bytes())} of memory")
        elif size_mode != (shape, mode):
            raise ZooError(f"{f} is {image.size[0]}x{image.size[1]} {size_mode[1]}, the first image "
                           f"{shape[0]}x{shape[1]} {mode}; every image of a data set needs the same size and colours")
        images.append(_pixels(image, mode, f))
    labels = np.array([label for _, label in files], dtype=np.int64)
    x = np.stack(images)
    return x, labels, tuple(x.shape[1:]), digest.hexdigest()


def _open(f: Path, raw: bytes, Image):
    """The image in ``raw`` (its header read only); unreadable files and decompression bombs are one line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(raw))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ZooError(f"{f} declares more pixels than Pillow's decompression-bomb limit; it is not a data "
                       f"image") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ZooError(f"{f} is not an image Pillow can read ({type(e).__name__}); remove or replace it") from None


def _mode(image, f: Path) -> str:
    if image.mode in ("L", "1"):
        return "L"
    if image.mode in ("RGB", "P"):
        return "RGB"
    raise ZooError(f"{f} is a {image.mode} image; the zoo reads grayscale (L) and colour (RGB) images: convert it")


def _pixels(image, mode: str, f: Path) -> np.ndarray:
    try:
        image.load()
        return np.asarray(image.convert(mode), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as e:
        raise ZooError(f"{f} is a corrupt or truncated image ({type(e).__name__}: {str(e)[:80]}); replace "
                       f"it") from None

