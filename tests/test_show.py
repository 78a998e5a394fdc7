"""deepscope show: the filters and the misclassified images of a saved run."""

import pytest

import deepscope as ds
from deepscope import nn

from data_paths import DATA


def _saved_run(tmp_path):
    ds.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 5), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 12 * 12, 10))
    run = tmp_path / "run"
    run.mkdir()
    ds.save(model, run)
    return run


def test_show_filters_writes_png(tmp_path, capsys):
    from deepscope.cli import main
    run = _saved_run(tmp_path)
    assert main(["show", "filters", str(run)]) == 0
    png = run / "filters.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(png) in capsys.readouterr().out


def test_show_filters_without_conv_is_one_line_error(tmp_path, capsys):
    from deepscope.cli import main
    model = nn.Sequential(nn.Linear(5, 3))
    ds.save(model, tmp_path / "m")
    assert main(["show", "filters", str(tmp_path / "m")]) == 1
    assert "no Conv2d layer" in capsys.readouterr().err


@pytest.mark.skipif(not (DATA / "mnist").is_dir(), reason="shared MNIST data not present")
def test_show_errors_writes_png(tmp_path, capsys):
    from deepscope.cli import main
    run = _saved_run(tmp_path)              # an untrained net: most test images are misclassified
    out = tmp_path / "errors.png"
    assert main(["show", "errors", str(run), "--data-dir", str(DATA / "mnist"), "--out", str(out),
                 "--max", "12"]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert "misclassified" in capsys.readouterr().out
