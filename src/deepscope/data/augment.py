"""The book's data augmentation: shifting images by one pixel (network3's ``expand_mnist.py``).

Chapter 6 expands MNIST's 50,000 training images to 250,000 by adding, for each image, four copies shifted by
one pixel up, down, left and right; the pixels that move in from the border are 0 (black). With it the book's
convolutional net goes from 99.37% to 99.60% test accuracy.

    >>> X5, y5 = expand_one_pixel(X, y)      # (5N, 1, 28, 28), (5N,)
"""
from __future__ import annotations

from .. import backend
from ..errors import ShapeError


def shift(X, dy: int, dx: int):
    """``X`` with every image moved ``dy`` pixels down and ``dx`` pixels right (negative: up, left), zero fill.

    Args:
        X: images, ``(..., H, W)`` (e.g. ``(N, 1, 28, 28)``); the last two axes are rows and columns.
        dy, dx: the shift in pixels; a shift of the whole height or width or more gives black images.

    Returns:
        a new array of the same shape and dtype: ``out[..., i, j] = X[..., i - dy, j - dx]`` where that pixel
        exists, else 0.
    """
    if X.ndim < 2:
        raise ShapeError(f"shift: expected images (..., H, W), got shape {tuple(X.shape)}")
    xp = backend.xp_of(X)
    H, W = X.shape[-2:]
    dy, dx = int(dy), int(dx)
    out = xp.zeros_like(X)
    if abs(dy) >= H or abs(dx) >= W:
        return out
    src_rows, dst_rows = slice(max(0, -dy), H - max(0, dy)), slice(max(0, dy), H - max(0, -dy))
    src_cols, dst_cols = slice(max(0, -dx), W - max(0, dx)), slice(max(0, dx), W - max(0, -dx))
    out[..., dst_rows, dst_cols] = X[..., src_rows, src_cols]
    return out


# The order of expand_mnist.py: the image, then shifted down, up, right, left.
ONE_PIXEL_SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))


def expand_one_pixel(X, y):
    """The book's expanded training set: each image followed by its four one-pixel shifts.

    Args:
        X: images ``(N, C, H, W)`` or ``(N, H, W)``, or flattened square images ``(N, H*W)`` (e.g. ``(N, 784)``).
        y: labels ``(N,)`` (or ``(N, ...)``, e.g. one-hot), repeated five times alongside.

    Returns:
        ``(X5, y5)`` with ``5N`` examples, in ``X``'s array module and dtype. Example ``5n + k`` is image ``n``
        shifted by ``ONE_PIXEL_SHIFTS[k]`` (unshifted, down, up, right, left), the order of ``expand_mnist.py``
        before it shuffles (training shuffles every epoch anyway).
    """
    xp = backend.xp_of(X)
    if len(y) != len(X):
        raise ShapeError(f"expand_one_pixel: {len(X)} images but {len(y)} labels")
    images = X
    if X.ndim == 2:  # flattened square images, as in the book's network.py
        side = int(round(X.shape[1] ** 0.5))
        if side * side != X.shape[1]:
            raise ShapeError(f"expand_one_pixel: flattened images must be square (N, H*W), got shape {tuple(X.shape)}")
        images = X.reshape(len(X), side, side)
    elif X.ndim < 2:
        raise ShapeError(f"expand_one_pixel: expected images (N, C, H, W), (N, H, W) or (N, H*W), got {tuple(X.shape)}")
    shifted = xp.stack([shift(images, dy, dx) for dy, dx in ONE_PIXEL_SHIFTS], axis=1)  # (N, 5, ...)
    X5 = shifted.reshape((5 * len(X),) + tuple(X.shape[1:]))
    y5 = backend.xp_of(y).repeat(y, 5, axis=0)
    return X5, y5


def expanded_training_data(training_data, shuffle: bool = True):
    """The book's expanded training set as network3 used it (``mnist_expanded.pkl.gz``): each image and its four
    one-pixel shifts (5x, see :func:`expand_one_pixel`), shuffled once with the global generator as
    ``expand_mnist.py`` did (network3 never reshuffles).

    Args:
        training_data: ``(X, y)``.
        shuffle: shuffle the 5N examples once (default True, as the book).

    Returns:
        ``(X5, y5)``.
    """
    X, y = expand_one_pixel(*training_data)
    if shuffle:
        order = backend.rng().permutation(X.shape[0])
        X, y = X[order], y[order]
    return X, y
