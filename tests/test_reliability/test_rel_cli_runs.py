"""Issue 9 through the command line: concurrent runs (class 1), --out on a folder that is not a run (2), runs
that remember their data (4), "saved" with nothing saved (5), printing before persisting (6), predict (7), a run
stopped before it began (9), one line instead of a traceback (11), --resume with changed settings (12)."""
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepscope import files
from deepscope.cli import main

from rel_helpers import ROOT, write_fake_mnist

TINY = ["--arch", "784-10-10:sigmoid", "--epochs", "2", "-m", "10", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data") / "mnist"
    write_fake_mnist(folder, n_train=120, n_test=20, seed=2)
    return folder


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """Run ``deepscope ARGS`` in this process from an empty folder: (exit code, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))

    def run(*argv):
        capsys.readouterr()
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:   # argparse's refusals
            rc = e.code
        out, err = capsys.readouterr()
        return rc, out, err
    return run


def error_line(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def epochs_of(run):
    return [json.loads(line)["epoch"] for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def spawn(args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HOME": str(cwd), "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "deepscope.cli", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# -- class 1: concurrent runs -------------------------------------------------------------------------------
def test_four_trains_started_at_once_get_four_intact_runs(tmp_path, data):
    procs = [spawn(["train", "--data-dir", data, *TINY, "--seed", k], tmp_path) for k in range(4)]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    assert [rc for _, _, rc in results] == [0] * 4, results
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 4
    for run in runs:
        assert epochs_of(run) == [1, 2]
        assert json.loads((run / "config.json").read_text())["command"] == "deepscope train"
        assert {"model.safetensors", "model.json", "checkpoint.safetensors"} <= {p.name for p in run.iterdir()}
        assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    seeds = sorted(json.loads((r / "config.json").read_text())["seed"] for r in runs)
    assert seeds == [0, 1, 2, 3]  # each config is its own run's


def test_four_trains_sharing_an_out_folder_give_one_run_and_three_refusals(tmp_path, data):
    out = tmp_path / "shared"
    procs = [spawn(["train", "--data-dir", data, *TINY, "--out", out], tmp_path) for _ in range(4)]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    assert sorted(rc for _, _, rc in results) == [0, 1, 1, 1], results
    for _, err, rc in results:
        if rc == 1:
            line = error_line(err)
            assert (line.startswith(f"deepscope: error: {out} is being written by another deepscope process (pid ")
                    or line == f"deepscope: error: {out} already holds a run; choose another --out, or continue "
                               f"it with deepscope train --resume {out}"), line
    assert epochs_of(out) == [1, 2]


def test_two_resumes_at_once_one_continues_one_is_refused(tmp_path, data):
    run = tmp_path / "r"
    assert spawn(["train", "--data-dir", data, *TINY, "--epochs", "1", "--schedule", "none", "--out", run],
                 tmp_path).wait(timeout=300) == 0
    procs = [spawn(["train", "--resume", run, "--epochs", "3", "--quiet"], tmp_path) for _ in range(2)]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    assert sorted(rc for _, _, rc in results) == [0, 1], results
    refused = next(err for _, err, rc in results if rc == 1)
    assert error_line(refused).startswith(f"deepscope: error: {run} is being written by another deepscope process")
    assert epochs_of(run) == [1, 2, 3]


# -- class 2: --out on a folder that is not a run ------------------------------------------------------------
@pytest.mark.parametrize("names", [["model.safetensors", "model.json"], ["metrics.jsonl"], ["notes.txt"]])
def test_out_on_a_folder_of_other_files_is_refused_and_untouched(cli, tmp_path, data, names):
    folder = tmp_path / "mine"
    folder.mkdir()
    for name in names:
        (folder / name).write_text(f"the user's {name}")
    rc, out, err = cli("train", "--data-dir", data, *TINY, "--out", folder)
    assert rc == 1
    assert error_line(err) == (f"deepscope: error: --out {folder} is a folder with files that are not a deepscope "
                               f"run ({', '.join(sorted(names))}); deepscope writes runs only into new or empty "
                               f"folders: choose another --out")
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)
    assert all((folder / n).read_text() == f"the user's {n}" for n in names)


def test_a_metrics_symlink_in_out_is_never_followed(cli, tmp_path, data):
    folder, target = tmp_path / "linked", tmp_path / "precious.jsonl"
    folder.mkdir()
    target.write_text("precious\n")
    (folder / "metrics.jsonl").symlink_to(target)
    rc, _, err = cli("train", "--data-dir", data, *TINY, "--out", folder)
    assert rc == 1 and "is a folder with files that are not a deepscope run (metrics.jsonl)" in error_line(err)
    assert target.read_text() == "precious\n" and (folder / "metrics.jsonl").is_symlink()


def test_out_that_is_a_file(cli, tmp_path, data):
    (tmp_path / "afile").write_text("x")
    rc, _, err = cli("train", "--data-dir", data, *TINY, "--out", "afile")
    assert (rc, error_line(err)) == (1, "deepscope: error: --out afile is a file, not a folder; choose another --out")
    assert (tmp_path / "afile").read_text() == "x"


# -- class 4: runs remember their data ---------------------------------------------------------------------------
def test_a_run_records_its_data_absolute_and_evaluates_from_anywhere(cli, tmp_path, data, monkeypatch):
    rel = os.path.relpath(data, tmp_path)
    assert cli("train", "--data-dir", rel, *TINY, "--out", "run")[0] == 0
    config = json.loads((tmp_path / "run/config.json").read_text())
    assert config["data_dir"] == str(data) and config["data"]["source"] == str(data)
    assert set(config["data"]["sha256"]) == {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}
    rc, here, _ = cli("evaluate", "run")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_fake_mnist(elsewhere / "data", n_train=120, n_test=20, seed=9)  # a different data/ beside the user
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("DEEPSCOPE_DATA", str(elsewhere / "data"))
    rc2, there, _ = cli("evaluate", tmp_path / "run")
    assert rc == rc2 == 0 and here == there and str(data) in there


def test_evaluate_refuses_other_data_and_says_where_the_data_went(cli, tmp_path, data):
    import shutil
    moved = tmp_path / "data-copy"
    shutil.copytree(data, moved)
    assert cli("train", "--data-dir", moved, *TINY, "--out", "run")[0] == 0
    other = tmp_path / "other"
    write_fake_mnist(other, n_train=120, n_test=20, seed=11)
    rc, _, err = cli("evaluate", "run", "--data-dir", other)
    assert rc == 1 and error_line(err).startswith(f"deepscope: error: {other} is not the data the run was trained "
                                                  f"on: its t10k-images-idx3-ubyte has SHA-256 ")
    shutil.move(moved, tmp_path / "moved-away")
    rc, _, err = cli("evaluate", "run")
    assert (rc, error_line(err)) == (1, f"deepscope: error: the run's data ({moved}) is not there any more; give "
                                        f"the folder where it is now")
    rc, out, _ = cli("evaluate", "run", "--data-dir", tmp_path / "moved-away")
    assert rc == 0 and "test       accuracy" in out


def test_rnn_mnist_runs_can_be_evaluated(cli, data):
    assert cli("rnn", "mnist", "--data-dir", data, "--epochs", "1", "--hidden", "8", "--quiet", "--out", "rm")[0] == 0
    rc, out, _ = cli("evaluate", "rm")
    trained = json.loads(Path("rm/metrics.jsonl").read_text().splitlines()[-1])
    assert rc == 0 and f"test       accuracy {trained['test_acc']:.2%} on 20 images" in out


# -- class 5: a data set too small to have a validation split ------------------------------------------------------
def test_three_training_images_save_a_model_and_strict_json(cli, tmp_path):
    write_fake_mnist(tmp_path / "three", n_train=3, n_test=5)
    rc, out, _ = cli("train", "--data-dir", tmp_path / "three", "--arch", "784-10-10:sigmoid", "--epochs", "2",
                     "-m", "1", "--quiet", "--out", "t3")
    assert rc == 0
    assert f"no validation images (0 in {tmp_path / 'three'}): the model saved is the last epoch's (2)" in out
    text = (tmp_path / "t3/metrics.jsonl").read_text()
    assert "NaN" not in text and [json.loads(line)["epoch"] for line in text.splitlines()] == [1, 2]
    assert (tmp_path / "t3/model.safetensors").is_file()
    rc, out, _ = cli("evaluate", "t3")
    assert rc == 0 and "validation none: the data set has no validation images" in out


# -- class 6: a closed stdout never loses work ---------------------------------------------------------------------
def test_a_closed_pipe_loses_no_finished_epoch(tmp_path, data):
    run = tmp_path / "piped"
    proc = spawn(["train", "--data-dir", data, "--arch", "784-10-10:sigmoid", "--epochs", "3", "-m", "10",
                  "--schedule", "none", "--out", run], tmp_path)
    proc.stdout.close()  # `| head -0`: nobody reads what it prints
    proc.wait(timeout=300)
    done = epochs_of(run) if (run / "metrics.jsonl").exists() else []
    assert done == list(range(1, len(done) + 1))
    if len(done) < 3:  # it stopped at its first print: what it finished is there, and it resumes
        assert spawn(["train", "--resume", run, "--quiet"], tmp_path).wait(timeout=300) == 0
    assert epochs_of(run) == [1, 2, 3]


# -- class 7: predict ----------------------------------------------------------------------------------------------
def test_predict_several_images_warns_on_blank_ones(cli, tmp_path, data):
    assert cli("train", "--data-dir", data, *TINY, "--out", "run")[0] == 0
    Image.fromarray(np.full((60, 40), 255, np.uint8)).save("white.png")
    digit = np.zeros((200, 200, 4), np.uint8)
    digit[40:160, 90:110, 3] = 255  # a '1' drawn in the alpha channel only
    Image.fromarray(digit, "RGBA").save("one.png")
    rc, out, err = cli("predict", "run", "white.png", "one.png")
    assert rc == 0
    assert error_line(err) == ("deepscope: warning: white.png is blank (one shade all over): there is no digit to "
                               "read; the answer below means nothing")
    lines = out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("white.png: ") and lines[1].startswith("one.png: ")


def test_predict_names_fashion_classes(cli, tmp_path):
    write_fake_mnist(tmp_path / "root/fashion", n_train=60, n_test=10)
    assert cli("train", "--dataset", "fashion", "--data-dir", tmp_path / "root", *TINY, "--out", "f")[0] == 0
    Image.fromarray((np.random.default_rng(0).random((28, 28)) * 255).astype(np.uint8)).save("x.png")
    rc, out, _ = cli("predict", "f", "x.png")
    assert rc == 0 and "T-shirt/top:" in out and "Ankle boot:" in out


def test_predict_with_nan_weights_says_so(cli, tmp_path, data):
    from safetensors.numpy import load_file, save_file
    assert cli("train", "--data-dir", data, *TINY, "--out", "run")[0] == 0
    weights = load_file("run/model.safetensors")
    save_file({k: np.full_like(v, np.nan) for k, v in weights.items()}, "run/model.safetensors")
    Image.fromarray(np.zeros((28, 28), np.uint8)).save("x.png")
    rc, out, err = cli("predict", "run", "x.png")
    assert (rc, error_line(err)) == (1, "deepscope: error: run: the model's outputs are not finite (its weights "
                                        "hold NaN or infinity)")
    assert out == ""


# -- class 9: a run stopped before it began --------------------------------------------------------------------------
def test_a_run_stopped_before_it_began_is_started_again_with_out(cli, tmp_path, data):
    (tmp_path / "r").mkdir()
    (tmp_path / "r/.deepscope.lock").write_text("pid 1: deepscope train\n")  # killed right after reserving it
    rc, _, err = cli("train", "--resume", "r", "--quiet")
    assert (rc, error_line(err)) == (1, "deepscope: error: cannot resume r: it stopped before it began (no "
                                        "config.json); start it again: deepscope train --out r ...")
    assert cli("train", "--data-dir", data, *TINY, "--out", "r")[0] == 0
    assert epochs_of(tmp_path / "r") == [1, 2]


# -- class 11: one line, never a traceback ---------------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--seed", "-1"], "deepscope train: error: argument --seed: must be in [0, 2^32), got -1 (see deepscope train --help)"),
    (["--arch", "fc99999999999"], "deepscope: error: not enough memory: Unable to allocate 570. TiB for an array with "
                                  "shape (99999999999, 784) and data type float64"),
])
def test_bad_training_options(cli, data, args, message):
    rc, _, err = cli("train", "--data-dir", data, *TINY, *args, "--out", "x")
    assert rc in (1, 2) and error_line(err) == message
    assert not Path("x").exists()


def test_show_out_must_name_an_image_and_is_checked_first(cli, data):
    assert cli("train", "--data-dir", data, *TINY, "--out", "run")[0] == 0
    for what in ("filters", "errors"):
        rc, _, err = cli("show", what, "run", "--out", "x.txt")
        assert (rc, error_line(err)) == (1, "deepscope: error: x.txt: a figure is written as .png or .svg; name "
                                            "the file with one of them")


@pytest.mark.parametrize("tamper, message", [
    (lambda run: (run / "config.json").write_text('{"arch": 5'), "config.json is not valid JSON"),
    (lambda run: (run / "config.json").write_text("[1, 2]"), "config.json does not hold a run's settings"),
    (lambda run: (run / "checkpoint.safetensors").write_bytes(b"\x00" * 40), "cannot read"),
])
def test_tampered_run_files(cli, data, tamper, message):
    assert cli("train", "--data-dir", data, *TINY, "--schedule", "none", "--out", "run")[0] == 0
    tamper(Path("run"))
    rc, _, err = cli("train", "--resume", "run", "--epochs", "3", "--quiet")
    assert rc == 1 and message in error_line(err) and error_line(err).startswith("deepscope: error: ")


def test_tampered_vocabulary_and_tiny_temperature(cli, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("to be or not to be, that is the question. " * 60)
    assert cli("rnn", "text", "--corpus", corpus, "--epochs", "1", "--hidden", "8", "--seq-len", "10", "-m", "4",
               "--sample-length", "0", "--quiet", "--out", "lm")[0] == 0
    rc, out, err = cli("rnn", "sample", "lm", "--temperature", "1e-308", "--length", "40")
    assert rc == 0 and err == "" and len(out) == 42   # greedy: a newline prime, 40 characters, a newline
    Path("lm/vocab.json").write_text('["a"]')
    rc, _, err = cli("rnn", "sample", "lm")
    assert (rc, error_line(err)) == (1, "deepscope: error: lm/vocab.json: expected an object with the "
                                        "vocabulary's \"chars\", got ['a']")


def test_book_rung_smaller_than_its_mini_batch(cli, data):
    rc, _, err = cli("book", "ch6", "baseline", "--epochs", "1", "--train-size", "5", "--data-dir", data, "--quiet",
                     "--out", "b")
    assert (rc, error_line(err)) == (1, "deepscope: error: baseline: 5 training images are fewer than the rung's "
                                        "mini-batch of 10; network3 trains on whole mini-batches only")


def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(cli, data, monkeypatch):
    assert cli("train", "--data-dir", data, *TINY, "--schedule", "none", "--out", "run")[0] == 0
    before = Path("run/checkpoint.safetensors").read_bytes()
    real = files.atomic_write

    def full(path, content):
        if Path(path).name == "checkpoint.safetensors":
            raise OSError(28, "No space left on device", str(path))
        return real(path, content)
    monkeypatch.setattr(files, "atomic_write", full)
    rc, _, err = cli("train", "--resume", "run", "--epochs", "3", "--quiet")
    assert (rc, error_line(err)) == (1, "deepscope: error: run/checkpoint.safetensors: No space left on device")
    assert Path("run/checkpoint.safetensors").read_bytes() == before
    assert epochs_of("run") == [1, 2]  # the metrics never claim an epoch whose checkpoint is missing


# -- class 12: --resume with changed settings; modes ---------------------------------------------------------------
@pytest.mark.parametrize("change, message", [
    (["--lr", "0.5"], "cannot resume run with --lr 0.5: it was trained with --lr 0.03"),
    (["--eta", "0.5"], "cannot resume run with --lr 0.5: it was trained with --lr 0.03"),
    (["-m", "7"], "cannot resume run with --batch-size 7: it was trained with --batch-size 10"),
    (["--arch", "784-30-10:sigmoid"], "cannot resume run with --arch 784-30-10:sigmoid: it was trained with --arch "
                                      "784-10-10:sigmoid"),
    (["--momentum", "0.5"], "cannot resume run with --momentum 0.5: it was trained with --momentum 0.9"),
])
def test_resume_refuses_a_changed_setting(cli, data, change, message):
    assert cli("train", "--data-dir", data, *TINY, "--schedule", "none", "--out", "run")[0] == 0
    config = Path("run/config.json").read_text()
    rc, _, err = cli("train", "--resume", "run", "--epochs", "3", *change)
    assert (rc, error_line(err)) == (1, f"deepscope: error: {message}, and a resumed run continues with its own "
                                        f"settings; leave out {message.split()[4]}, or start a new run")
    assert Path("run/config.json").read_text() == config and epochs_of("run") == [1, 2]


def test_resume_accepts_the_same_setting_typed_again(cli, data):
    assert cli("train", "--data-dir", data, *TINY, "--schedule", "none", "--out", "run")[0] == 0
    assert cli("train", "--resume", "run", "--epochs", "3", "--lr", "0.03", "-m", "10", "--quiet")[0] == 0
    assert epochs_of("run") == [1, 2, 3]


def test_resume_never_rewrites_config_to_fewer_epochs_than_done(cli, data):
    assert cli("train", "--data-dir", data, *TINY, "--schedule", "none", "--out", "run")[0] == 0
    rc, _, err = cli("train", "--resume", "run", "--epochs", "1")
    assert (rc, error_line(err)) == (1, "deepscope: error: cannot resume run for 1 epochs: it has already trained 2; "
                                        "give --epochs 2 or more")
    assert json.loads(Path("run/config.json").read_text())["epochs"] == 2


def test_run_files_follow_the_umask(cli, data):
    old = os.umask(0o022)
    try:
        assert cli("train", "--data-dir", data, *TINY, "--out", "run")[0] == 0
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in Path("run").iterdir() if not p.name.startswith(".")}
    assert modes and set(modes.values()) == {0o644}, modes


def test_book_ch6_runs_are_evaluated_on_their_own_data(cli, tmp_path, data, monkeypatch):
    rc, _, _ = cli("book", "ch6", "baseline", "--epochs", "1", "--train-size", "20", "--val-size", "20",
                   "--data-dir", data, "--quiet", "--out", "b")
    assert rc == 0
    assert json.loads(Path("b/baseline-1/config.json").read_text())["data_source"] == str(data)
    monkeypatch.setenv("DEEPSCOPE_DATA", str(tmp_path))  # no MNIST here: the sample would be the fallback
    rc, out, _ = cli("evaluate", "b/baseline-1")
    assert rc == 0 and f"on 20 images ({data})" in out and "embedded sample" not in out
