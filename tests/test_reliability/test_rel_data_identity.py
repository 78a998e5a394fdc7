"""Class 3 of issue 9: data identity. A folder's data set is recognised by the SHA-256 of its decompressed
files, a mismatch with what was asked for is refused, a missing path is an error wherever it was named, and
nothing the user put in the cache is deleted."""
import dataclasses
import gzip
import hashlib
import shutil

import numpy as np
import pytest

from deepscope.data import load_mnist, write_idx
from deepscope.data import mnist as mnist_module
from deepscope.data.mnist import FILES
from deepscope.errors import DataError

from rel_helpers import REAL_MNIST, needs_mnist, write_fake_mnist


def sha_of(path):
    return hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest()


def pretend_published(monkeypatch, dataset, folder, files=FILES):
    """Make ``folder``'s files the published files of ``dataset`` (their hashes become the known ones)."""
    spec = mnist_module._DATASETS[dataset]
    sums = {f: sha_of(folder / (f + ".gz")) for f in files}
    monkeypatch.setitem(mnist_module._DATASETS, dataset, dataclasses.replace(spec, sha256=sums))


def test_fashion_asked_on_an_mnist_folder_is_refused(isolated, monkeypatch):
    write_fake_mnist(isolated / "d")
    pretend_published(monkeypatch, "mnist", isolated / "d")
    with pytest.raises(DataError) as err:
        load_mnist("fashion", data_dir=isolated / "d", download=False)
    assert str(err.value) == (f"{isolated / 'd'} holds MNIST, not Fashion-MNIST (its train-images-idx3-ubyte is "
                              f"MNIST's, by SHA-256); ask for dataset 'mnist', or give a folder of Fashion-MNIST")


def test_mnist_asked_on_a_fashion_folder_is_refused_by_its_labels(isolated, monkeypatch):
    write_fake_mnist(isolated / "f")
    pretend_published(monkeypatch, "fashion", isolated / "f", files=["train-labels-idx1-ubyte"])
    with pytest.raises(DataError, match=r"holds Fashion-MNIST, not MNIST \(its train-labels-idx1-ubyte is "
                                        r"Fashion-MNIST's, by SHA-256\); ask for dataset 'fashion'"):
        load_mnist("mnist", data_dir=isolated / "f", download=False)


@needs_mnist
def test_real_mnist_folder_refused_as_fashion(isolated):
    with pytest.raises(DataError, match=r"holds MNIST, not Fashion-MNIST \(its train-images-idx3-ubyte is MNIST's"):
        load_mnist("fashion", data_dir=REAL_MNIST, download=False)


@needs_mnist
def test_real_mnist_is_identified_and_fully_verified(isolated):
    data = load_mnist(data_dir=REAL_MNIST, download=False)
    assert data.identity == {"dataset": "mnist", "source": str(REAL_MNIST),
                             "sha256": mnist_module._DATASETS["mnist"].sha256, "verified": list(FILES)}


@needs_mnist
def test_recompressed_mnist_in_the_cache_is_verified_by_its_content_and_kept(isolated):
    cache = isolated / "cache/deepscope/mnist"
    cache.mkdir(parents=True)
    for f in FILES:  # another packager: level 1, a name and time stamp in the header; or not compressed at all
        raw = gzip.decompress((REAL_MNIST / (f + ".gz")).read_bytes())
        if f.startswith("t10k"):
            (cache / f).write_bytes(raw)
        else:
            (cache / (f + ".gz")).write_bytes(gzip.compress(raw, compresslevel=1, mtime=1234))
    data = load_mnist(download=False)
    assert data.source == str(cache) and data.verified == tuple(FILES)
    assert len(list(cache.iterdir())) == 4


def test_recompressed_fashion_images_in_the_cache_are_kept(isolated, monkeypatch):
    """The image files' only published check is the MD5 of the authors' .gz: another compressor's copy of the
    same bytes must load, not be deleted as an 'MD5 mismatch'."""
    cache = isolated / "cache/deepscope/fashion"
    write_fake_mnist(cache)
    pretend_published(monkeypatch, "fashion", cache, files=["train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"])
    for f in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
        path = cache / (f + ".gz")
        path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()), compresslevel=3, mtime=99))
    data = load_mnist("fashion", download=False)
    assert data.name == "fashion" and data.verified == ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte")
    assert len(list(cache.iterdir())) == 4


def test_fashion_label_hashes_are_the_real_files():
    """Computed from Zalando Research's files (whose .gz match the MD5 sums its README publishes)."""
    sums = mnist_module._DATASETS["fashion"].sha256
    assert sums == {
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"}
    assert set(mnist_module._DATASETS["fashion"].md5_gz) == {"train-images-idx3-ubyte", "t10k-images-idx3-ubyte"}


def test_a_wrong_file_in_the_cache_is_named_and_kept(isolated):
    cache = isolated / "cache/deepscope/mnist"
    write_fake_mnist(cache)
    before = {p.name: p.read_bytes() for p in cache.iterdir()}
    with pytest.raises(DataError) as err:
        load_mnist(download=False)
    got = sha_of(cache / "train-images-idx3-ubyte.gz")
    expected = mnist_module._DATASETS["mnist"].sha256["train-images-idx3-ubyte"]
    assert str(err.value) == (f"{cache / 'train-images-idx3-ubyte.gz'}: SHA-256 checksum mismatch (expected "
                              f"{expected}, got {got}): not the published file; remove it to download it again")
    assert {p.name: p.read_bytes() for p in cache.iterdir()} == before


def test_missing_path_from_the_environment_is_refused_like_the_argument(isolated, monkeypatch):
    monkeypatch.setenv("DEEPSCOPE_DATA", str(isolated / "dtaa"))  # a typo
    with pytest.raises(DataError) as err:
        load_mnist(download=False, verbose=False)
    assert str(err.value) == f"no such folder: {isolated / 'dtaa'} (named by $DEEPSCOPE_DATA)"
    monkeypatch.delenv("DEEPSCOPE_DATA")
    with pytest.raises(DataError) as err:
        load_mnist(data_dir=isolated / "dtaa", download=False, verbose=False)
    assert str(err.value) == f"no such folder: {isolated / 'dtaa'} (named by data_dir)"


def test_relative_data_dir_is_recorded_absolute(isolated, monkeypatch):
    write_fake_mnist(isolated / "data")
    monkeypatch.chdir(isolated)
    data = load_mnist(data_dir="data", download=False)
    assert data.source == str(isolated / "data") and data.identity["source"] == str(isolated / "data")
    assert data.identity["sha256"]["t10k-labels-idx1-ubyte"] == sha_of(isolated / "data/t10k-labels-idx1-ubyte.gz")
    assert data.identity["verified"] == []


def test_environment_folder_without_the_data_says_so_when_falling_back(isolated, monkeypatch, capsys):
    (isolated / "empty").mkdir()
    monkeypatch.setenv("DEEPSCOPE_DATA", str(isolated / "empty"))
    data = load_mnist(download=False)
    assert data.source == "embedded sample" and data.identity["source"] == "embedded sample"
    assert len(data.identity["sha256"]) == 6
    assert capsys.readouterr().err.count("\n") == 1


def test_download_that_fails_its_checksum_is_deleted_and_named(isolated, monkeypatch):
    mirror = isolated / "mirror"
    write_fake_mnist(mirror)
    spec = mnist_module._DATASETS["mnist"]
    monkeypatch.setitem(mnist_module._DATASETS, "mnist", dataclasses.replace(spec, mirrors=(mirror.as_uri() + "/",)))
    with pytest.raises(DataError) as err:
        load_mnist(verbose=False)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{mirror.as_uri()}/train-images-idx3-ubyte.gz (downloaded as ")
    assert msg.endswith(f"SHA-256 checksum mismatch (expected {spec.sha256['train-images-idx3-ubyte']}, "
                        f"got {sha_of(mirror / 'train-images-idx3-ubyte.gz')}); the download was deleted")
    assert list((isolated / "cache/deepscope/mnist").iterdir()) == []


def test_unrecognised_data_is_loaded_unverified(isolated):
    arrays = write_fake_mnist(isolated / "mine", gz=False)
    data = load_mnist(data_dir=isolated / "mine", download=False)
    assert data.verified == () and data.name == "mnist"
    np.testing.assert_array_equal(data.test[1], arrays["t10k-labels-idx1-ubyte"])
