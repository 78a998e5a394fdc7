"""Data sets: MNIST and Fashion-MNIST (the book's 50k/10k/10k split), IDX files, and the book's augmentation."""
from .augment import expand_one_pixel, expanded_training_data, shift
from .idx import read_idx, write_idx
from .mnist import MNISTData, load_mnist

__all__ = ["load_mnist", "MNISTData", "read_idx", "write_idx", "expand_one_pixel", "expanded_training_data", "shift"]
