"""Class 7 of issue 9 (the library part): a user's picture read as MNIST's input. Alpha-only ink is seen, blank
pictures are flagged, any size goes through MNIST's recipe (bounding box into 20×20, centre of mass at the
centre of 28×28), several pictures make one batch."""
import numpy as np
import pytest
from PIL import Image

from deepscope.data import images
from deepscope.data.images import load_images, to_mnist
from deepscope.errors import DataError

from rel_helpers import REAL_MNIST, needs_mnist


def digit(size=28):
    """A '7'-like stroke pattern, light on dark, float in [0, 1], drawn into a size×size canvas."""
    img = np.zeros((size, size), np.float32)
    s = size / 28
    img[int(6 * s):int(9 * s), int(7 * s):int(21 * s)] = 1.0            # top bar
    for r in range(int(9 * s), int(23 * s)):                               # diagonal
        c = int(21 * s - (r - 9 * s) * 0.5)
        img[r, max(c - int(2 * s), 0):c + 1] = 1.0
    return img


def save(path, array, mode):
    Image.fromarray(array, mode=mode).save(path)
    return path


def centre_of_mass(img):
    ys, xs = np.indices(img.shape)
    return float((ys * img).sum() / img.sum()), float((xs * img).sum() / img.sum())


def ring(size, h_frac=0.6, w_frac=0.35):
    """An off-centre '0': an elliptic ring, light on dark."""
    ys, xs = np.indices((size, size)) / size
    r = ((ys - 0.4) / (h_frac / 2)) ** 2 + ((xs - 0.6) / (w_frac / 2)) ** 2
    return ((r < 1) & (r > 0.45)).astype(np.float32)


def test_any_size_follows_mnists_recipe(tmp_path):
    big = (255 * (1 - ring(200))).astype(np.uint8)  # dark ink on white paper, 200×200, off centre
    X, notes = load_images([save(tmp_path / "seven.png", big, "L")])
    assert X.shape == (1, 1, 28, 28) and X.dtype == np.float32 and notes == [None]
    img = X[0, 0]
    rows, cols = np.nonzero(img > 0.25)
    assert max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) in (20, 21)  # fitted into 20×20
    cy, cx = centre_of_mass(img)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5                      # centre of mass at the centre
    assert img.max() == pytest.approx(1.0) and img.min() == 0.0              # light on dark


def test_ink_only_in_the_alpha_channel_is_seen(tmp_path):
    rgba = np.zeros((28, 28, 4), np.uint8)  # black everywhere; the digit is where alpha is opaque
    rgba[..., 3] = (255 * digit()).astype(np.uint8)
    X, notes = load_images([save(tmp_path / "alpha.png", rgba, "RGBA")])
    np.testing.assert_allclose(X[0, 0], digit(), atol=1 / 255)  # was read as a black square
    assert notes == [None]
    rgba[..., :3] = 255  # white ink on transparency: the same digit
    X, _ = load_images([save(tmp_path / "alpha-white.png", rgba, "RGBA")])
    np.testing.assert_allclose(X[0, 0], digit(), atol=1 / 255)


@pytest.mark.parametrize("shade", [0, 255, 128])
def test_blank_images_are_flagged(tmp_path, shade):
    path = save(tmp_path / f"blank{shade}.png", np.full((50, 40), shade, np.uint8), "L")
    X, notes = load_images([path])
    assert notes == [f"{path} is blank (one shade all over): there is no digit to read"]
    assert X.shape == (1, 1, 28, 28)


def test_several_images_make_one_batch_in_order(tmp_path):
    paths = [save(tmp_path / "a.png", (255 * digit()).astype(np.uint8), "L"),
             save(tmp_path / "b.png", np.zeros((28, 28), np.uint8), "L"),
             save(tmp_path / "c.png", (255 * (1 - digit(84))).astype(np.uint8), "L")]
    X, notes = load_images(paths)
    assert X.shape == (3, 1, 28, 28)
    assert notes[0] is None and notes[1].startswith(str(paths[1])) and notes[2] is None
    np.testing.assert_allclose(X[0, 0], digit(), atol=1 / 255)


def test_28x28_input_is_taken_as_it_is_after_polarity(tmp_path):
    X, _ = load_images([save(tmp_path / "inverted.png", (255 * (1 - digit())).astype(np.uint8), "L")])
    np.testing.assert_allclose(X[0, 0], digit(), atol=1 / 255)


@needs_mnist
def test_an_enlarged_mnist_digit_comes_back_close_to_itself(tmp_path):
    from deepscope.data import read_idx
    originals = read_idx(REAL_MNIST / "t10k-images-idx3-ubyte.gz")[:20].astype(np.float32) / 255
    for i, original in enumerate(originals):
        big = np.asarray(Image.fromarray(original, mode="F").resize((140, 140), Image.Resampling.BILINEAR))
        path = save(tmp_path / f"{i}.png", (255 * (1 - np.clip(big, 0, 1))).astype(np.uint8), "L")
        X, _ = load_images([path])
        r = np.corrcoef(X[0, 0].ravel(), original.ravel())[0, 1]
        assert r > 0.85, (i, r)
        assert np.allclose(centre_of_mass(X[0, 0]), centre_of_mass(original), atol=0.75)


@pytest.mark.parametrize("content, message", [
    (None, "no such image: {path}"),
    (b"not an image at all", "{path}: not an image deepscope can read"),
])
def test_unreadable_files_are_one_line(tmp_path, content, message):
    path = tmp_path / "x.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError) as err:
        load_images([path])
    assert str(err.value).startswith(message.format(path=path)) and "\n" not in str(err.value)


def test_no_images_is_refused():
    with pytest.raises(DataError, match="^no images given$"):
        load_images([])


def test_to_mnist_keeps_a_digit_whose_mass_sits_off_centre_inside_the_field():
    img = np.zeros((100, 100), np.float32)
    img[10:90, 10:20] = 1.0   # a tall bar with a heavy blob at its foot
    img[80:90, 10:60] = 1.0
    out = to_mnist(img)
    assert out.shape == (28, 28) and out.sum() > 0
    assert images.is_blank(np.zeros((3, 3))) and not images.is_blank(out)
