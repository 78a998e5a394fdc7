"""A user's pictures as MNIST's input: one digit (or garment) per image, light on dark, 28×28, in [0, 1].

MNIST's images were made by a recipe (LeCun et al.): each digit's bounding box was scaled, keeping its aspect
ratio, to fit a 20×20 box (anti-aliased, hence grey levels), then placed in a 28×28 field so that its centre of
mass lies at the field's centre. :func:`to_mnist` follows that recipe, so a photo or a drawing of any size reads
like the images the net was trained on:

    1. grey levels in [0, 1] (colour by luminance; an alpha channel composited onto the background that
       contrasts with the strokes, so ink drawn only in alpha is seen);
    2. the background (the median of the border pixels) made dark: dark-on-light images are inverted;
    3. the ink's bounding box (pixels above 1/4 of the brightest) cropped and scaled to fit 20×20;
    4. placed in 28×28 with its centre of mass at (14, 14).

A 28×28 image is taken as already in MNIST's format (steps 1 and 2 only). An image of one uniform shade has no
digit in it: :func:`load_images` reports it as blank, and whatever a net answers for it means nothing.

    >>> X, notes = load_images(["digit.png", "photo.jpg"])   # X: float32 (2, 1, 28, 28); notes: [str | None]

The image's size is read from its header and checked before any pixel is decoded: a small compressed file that
declares a huge picture costs nothing (:data:`MAX_PIXELS`).
"""
from __future__ import annotations

from pathlib import Path

import numpy
from PIL import Image, UnidentifiedImageError

from ..errors import DataError

MAX_PIXELS = 4096 * 4096   # 16.8 megapixels: a 12 MP photo fits; decoded as 8-bit RGBA it is 67 MB
SIDE, BOX = 28, 20          # MNIST's field and the box its digits are scaled into
BLANK_CONTRAST = 0.1        # an image whose grey levels span less than this holds no digit


def read_grey(path) -> numpy.ndarray:
    """The image at ``path`` as float32 grey levels ``(H, W)`` in [0, 1], alpha composited (step 1 above).

    Raises:
        DataError: no such file, not an image, or more than :data:`MAX_PIXELS` pixels.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise _too_large(path, f"{w}x{h} pixels")
            if w == 0 or h == 0:
                raise DataError(f"{path}: an image of {w}x{h} pixels is empty")
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                grey = numpy.asarray(im, dtype=numpy.float64)
                top = 1.0 if im.mode == "F" else 65535.0
                return numpy.clip(grey / top, 0, 1).astype(numpy.float32)
            rgba = numpy.asarray(im.convert("RGBA"), dtype=numpy.float32) / 255
    except FileNotFoundError:
        raise DataError(f"no such image: {path}") from None
    except Image.DecompressionBombError:  # Pillow's own limit, above ours, refuses it before we see its size
        raise _too_large(path, f"over {2 * Image.MAX_IMAGE_PIXELS:,} pixels") from None
    except UnidentifiedImageError as e:
        raise DataError(f"{path}: not an image deepscope can read ({e})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read this image ({e.strerror or e})") from None
    grey = rgba[..., :3] @ numpy.array([0.299, 0.587, 0.114], dtype=numpy.float32)  # luminance (ITU-R 601)
    alpha = rgba[..., 3]
    if alpha.min() < 1:
        # Composite onto the shade the strokes stand out from: ink drawn dark goes on white, light ink on black.
        weight = alpha.sum()
        ink = float((grey * alpha).sum() / weight) if weight > 0 else 0.0
        background = 1.0 if ink < 0.5 else 0.0
        grey = grey * alpha + background * (1 - alpha)
    return grey.astype(numpy.float32)


def _too_large(path, size: str) -> DataError:
    return DataError(f"{path}: {size}, more than the {MAX_PIXELS:,} deepscope reads; scale it down first")


def light_on_dark(grey: numpy.ndarray) -> numpy.ndarray:
    """``grey`` with a dark background (step 2): inverted when the median of its border pixels is light."""
    border = numpy.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    return 1 - grey if numpy.median(border) > 0.5 else grey


def is_blank(img: numpy.ndarray) -> bool:
    """True when ``img`` is of (nearly) one shade: no digit to read."""
    return float(img.max() - img.min()) < BLANK_CONTRAST


def to_mnist(img: numpy.ndarray) -> numpy.ndarray:
    """MNIST's recipe (steps 3 and 4) on a light-on-dark image ``(H, W)`` in [0, 1]: a ``(28, 28)`` float32.

    A ``(28, 28)`` image is returned as it is; a blank one (see :func:`is_blank`) as zeros.
    """
    img = numpy.asarray(img, dtype=numpy.float32)
    if img.shape == (SIDE, SIDE):
        return img
    if is_blank(img):
        return numpy.zeros((SIDE, SIDE), numpy.float32)
    img = img - img.min()
    rows, cols = numpy.nonzero(img > 0.25 * img.max())
    crop = img[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    h, w = crop.shape
    scale = BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # PIL's (width, height)
    small = numpy.asarray(Image.fromarray(crop, mode="F").resize(size, Image.Resampling.LANCZOS))
    small = numpy.clip(small / max(float(small.max()), 1e-12), 0, 1)
    # centre of mass of the scaled digit (in pixel indices); move it to pixel (14, 14), where MNIST's digits have it
    ys, xs = numpy.indices(small.shape)
    mass = small.sum()
    top = int(round(SIDE / 2 - (ys * small).sum() / mass))
    left = int(round(SIDE / 2 - (xs * small).sum() / mass))
    out = numpy.zeros((SIDE, SIDE), numpy.float32)
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + small.shape[0], SIDE), min(left + small.shape[1], SIDE)
    out[r0:r1, c0:c1] = small[r0 - top:r1 - top, c0 - left:c1 - left]
    return out


def load_images(paths):
    """Several pictures as one batch for an MNIST net.

    Args:
        paths: image files (PNG, JPEG, ... anything Pillow reads).

    Returns:
        ``(X, notes)``: X float32 ``(N, 1, 28, 28)`` in [0, 1], light on dark; ``notes[i]`` a line saying why
        image i cannot be read as a digit (blank), or None.
    """
    images, notes = [], []
    for path in paths:
        img = light_on_dark(read_grey(path))
        blank = is_blank(img)
        notes.append(f"{path} is blank (one shade all over): there is no digit to read" if blank else None)
        images.append(to_mnist(img))
    if not images:
        raise DataError("no images given")
    return numpy.stack(images)[:, None], notes
