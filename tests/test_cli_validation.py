"""The deepscope command as a new user meets it: bad input gives one line and exit code 1 or 2, never a
traceback; Ctrl-C keeps the last checkpoint and says how to resume; one command's run folder given to another
is named for what it is."""
import json
import urllib.error

import pytest

from deepscope.cli import main
from deepscope.data import mnist as mnist_module

FC = ["--arch", "784-30-10:sigmoid", "-m", "10", "--eta", "0.5", "--momentum", "0", "--init", "book",
      "--schedule", "none", "--train-size", "500", "--quiet"]


@pytest.fixture
def offline(monkeypatch, tmp_path):
    def fail(url, timeout=None):
        raise urllib.error.URLError("offline in tests")
    monkeypatch.setattr(mnist_module.urllib.request, "urlopen", fail)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("DEEPSCOPE_DATA", raising=False)


def one_line_error(capsys, argv, code):
    """Run the command; it must fail with ``code`` and one line on stderr (besides the offline notice)."""
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse
        rc = e.code
    err = capsys.readouterr().err
    assert rc == code, err
    lines = [line for line in err.splitlines() if "using the embedded sample" not in line]  # the offline notice
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("argv,msg", [
    (["train", "--epochs", "0"], "--epochs: must be at least 1, got 0"),
    (["train", "--epochs", "-1"], "--epochs: must be at least 1"),
    (["train", "-m", "0"], "--batch-size/-m: must be at least 1"),
    (["train", "--eta", "0"], "--eta: must be positive"),
    (["train", "--eta", "nan"], "--eta: must be positive"),
    (["train", "--eta", "fast"], "--eta: expected a number, got 'fast'"),
    (["train", "--train-size", "-10"], "--train-size: must be at least 1"),
    (["train", "--lmbda", "-1"], "--lmbda: must be at least 0"),
    (["train", "--momentum", "1.5"], "--momentum: must be in [0, 1)"),
    (["train", "--early-stopping", "0"], "--early-stopping: must be at least 1"),
    (["train", "--data-dir", "/nonexistent/mnist"], "--data-dir: no such folder: /nonexistent/mnist"),
    (["train", "--dataset", "cifar"], "invalid choice: 'cifar'"),
    (["evaluate", "somewhere", "--data-dir", "/nonexistent"], "no such folder"),
    (["show", "errors", "somewhere", "--max", "-1"], "--max: must be at least 0"),
    (["book", "ch6", "conv", "--data-dir", "/nonexistent"], "--data-dir: no such folder"),
    (["scope", "speed", "--n", "0"], "--n: must be at least 1"),
    (["scope", "speed", "--eta", "-1"], "--eta: must be positive"),
    (["scope", "compare", "--n-val", "0"], "--n-val: must be at least 1"),
    (["scope", "time", "--hidden", "0"], "--hidden: must be at least 1"),
    (["scope", "time", "--batch", "0"], "--batch: must be at least 1"),
    (["rnn", "mnist", "--lr", "0"], "--lr: must be positive"),
    (["rnn", "mnist", "--epochs", "0"], "--epochs: must be at least 1"),
    (["rnn", "text", "--seq-len", "0"], "--seq-len: must be at least 1"),
    (["rnn", "text", "--layers", "0"], "--layers: must be at least 1"),
    (["rnn", "sample", "somewhere", "--temperature", "0"], "--temperature: must be positive"),
])
def test_bad_option_values_are_one_line_exit_2(capsys, argv, msg):
    err = one_line_error(capsys, argv, 2)
    assert msg in err and "--help" in err


@pytest.mark.parametrize("argv,msg", [
    (["scope", "speed", "--layers", "784,0,10"], "--layers: expected comma-separated integers of at least 1"),
    (["scope", "compare", "--depths", "0"], "--depths: expected comma-separated integers of at least 1"),
    (["book", "ch6", "conv", "--epochs", "0"], "--epochs must be at least 1, got 0"),
])
def test_bad_lists_are_one_line_exit_1(capsys, argv, msg):
    assert msg in one_line_error(capsys, argv, 1)


def test_an_arch_that_does_not_fit_fails_before_writing_a_run(tmp_path, offline, capsys):
    run = tmp_path / "run"
    err = one_line_error(capsys, ["train", *FC[2:], "--arch", "100-30-10", "--out", str(run)], 1)
    assert "--arch 100-30-10 does not fit images of shape (1, 28, 28)" in err
    err = one_line_error(capsys, ["train", *FC[2:], "--arch", "784-30-5", "--out", str(run)], 1)
    assert "5 outputs but the data has 10 classes" in err
    assert not run.exists()  # so the same --out works once the arch is fixed


def test_ctrl_c_keeps_the_checkpoint_and_resume_finishes(tmp_path, offline, capsys, monkeypatch):
    import deepscope.cli.train as commands
    real_fit = commands.fit

    class CtrlCInEpoch2:
        def on_step(self, step, model, optimizer):
            if step > 500 // 10:  # the first step of epoch 2
                raise KeyboardInterrupt

    monkeypatch.setattr(commands, "fit", lambda *a, **kw: real_fit(*a, **{**kw, "callbacks": [CtrlCInEpoch2()]}))
    run = tmp_path / "run"
    assert main(["train", *FC, "--epochs", "3", "--out", str(run)]) == 130
    err = capsys.readouterr().err
    assert f"interrupted; continue with: deepscope train --resume {run}" in err and "Traceback" not in err
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1]
    assert (run / "checkpoint.safetensors").exists() and (run / "model.safetensors").exists()

    monkeypatch.setattr(commands, "fit", real_fit)
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert "best validation accuracy" in capsys.readouterr().out


def test_resume_without_a_checkpoint_and_out_of_an_existing_run(tmp_path, offline, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"arch": "784-30-10:sigmoid"}))
    err = one_line_error(capsys, ["train", *FC, "--out", str(run)], 1)
    assert "already holds a run" in err and f"--resume {run}" in err
    assert json.loads((run / "config.json").read_text()) == {"arch": "784-30-10:sigmoid"}  # untouched
    # A run stopped before its first epoch ended is started again by --resume (issue 9, class 9: it was stuck)
    assert main(["train", "--resume", str(run), "--epochs", "1", "--train-size", "500", "--quiet"]) == 0
    assert "stopped before its first epoch ended; starting it again" in capsys.readouterr().out
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1]


@pytest.fixture
def text_run(tmp_path, capsys):
    run = tmp_path / "text"
    assert main(["rnn", "text", "--hidden", "8", "--embedding", "4", "--epochs", "1", "-m", "4", "--seq-len", "20",
                 "--sample-length", "0", "--quiet", "--out", str(run)]) == 0
    capsys.readouterr()
    return run


@pytest.mark.parametrize("argv,msg", [
    (["evaluate", "{run}"], "is a run of deepscope rnn text: evaluate works on runs of deepscope train"),
    (["predict", "{run}", "digit.png"], "is a run of deepscope rnn text: predict works"),
    (["show", "errors", "{run}"], "is a run of deepscope rnn text: show errors works"),
    (["train", "--resume", "{run}"], "it is a run of deepscope rnn text; --resume continues runs of deepscope train"),
    (["rnn", "text", "--out", "{run}"], "already holds a run; choose another --out"),
])
def test_a_run_of_another_command_is_named(text_run, capsys, argv, msg):
    err = one_line_error(capsys, [a.format(run=text_run) for a in argv], 1)
    assert msg in err
    if argv[0] != "rnn":
        assert "rnn sample" in err or "--resume" in argv


def test_a_corpus_too_short_fails_before_training(tmp_path, capsys):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("hello world\n")
    run = tmp_path / "run"
    err = one_line_error(capsys, ["rnn", "text", "--corpus", str(corpus), "--out", str(run)], 1)
    assert "too short for -m 32 streams of --seq-len 100" in err
    assert not run.exists()


def test_resume_cannot_extend_a_finished_cosine_schedule(tmp_path, monkeypatch, capsys):
    def fail(url, timeout=None):
        raise urllib.error.URLError("offline in tests")
    monkeypatch.setattr(mnist_module.urllib.request, "urlopen", fail)
    run = tmp_path / "run"
    args = ["train", "--arch", "784-10", "--epochs", "1", "--train-size", "200", "--schedule", "cosine", "--quiet",
            "--out", str(run)]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "3", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "cosine schedule was planned for 1" in err and err.count("\n") == 1
