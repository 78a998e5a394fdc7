"""Build the small MNIST sample shipped in the package (src/deepscope/data/sample/), reproducibly.

    python scripts/build_mnist_sample.py [MNIST_DIR]      (default: ../shared/data/mnist)

It draws, with a fixed seed, a stratified sample (each digit in its proportion in the part it is drawn from):
5,000 training images from the book's training part (the first 50,000), 1,000 validation images from the
book's validation part (the last 10,000 of the training file), and 1,000 test images from t10k. Each split is
kept in its original order and written as gzip IDX files without time stamps, so reruns give identical bytes.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from deepscope.data.idx import read_idx, write_idx  # noqa: E402

SEED = 20150101
SIZES = {"train": 5000, "validation": 1000, "test": 1000}
OUT = ROOT / "src/deepscope/data/sample"


def stratified(labels, n, rng):
    """Sorted indices of ``n`` examples, each class getting its share of ``n`` (largest remainders round)."""
    classes, counts = numpy.unique(labels, return_counts=True)
    quota = counts * n / len(labels)
    take = numpy.floor(quota).astype(int)
    take[numpy.argsort(take - quota)[: n - take.sum()]] += 1   # the largest remainders get one more
    chosen = [rng.choice(numpy.flatnonzero(labels == c), size=k, replace=False) for c, k in zip(classes, take)]
    return numpy.sort(numpy.concatenate(chosen))


def main(src):
    src = Path(src)
    train_X, train_y = read_idx(src / "train-images-idx3-ubyte.gz"), read_idx(src / "train-labels-idx1-ubyte.gz")
    test_X, test_y = read_idx(src / "t10k-images-idx3-ubyte.gz"), read_idx(src / "t10k-labels-idx1-ubyte.gz")
    parts = {"train": (train_X[:50000], train_y[:50000]),
             "validation": (train_X[50000:], train_y[50000:]),
             "test": (test_X, test_y)}
    rng = numpy.random.default_rng(SEED)
    total = 0
    for split, (X, y) in parts.items():
        idx = stratified(y, SIZES[split], rng)
        for kind, array in (("images-idx3", X[idx]), ("labels-idx1", y[idx])):
            path = OUT / f"{split}-{kind}-ubyte.gz"
            write_idx(path, array)
            size = path.stat().st_size
            total += size
            print(f"{path.relative_to(ROOT)}  {size:>9,} bytes  sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}")
        print(f"  {split}: {len(idx)} images, class counts {numpy.bincount(y[idx], minlength=10).tolist()}")
    print(f"total {total:,} bytes")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ROOT.parent / "shared/data/mnist")
