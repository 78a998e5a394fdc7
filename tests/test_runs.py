"""The run folder's one owner (deepscope.runs.Run), the one atomic writer (deepscope.files) and train.step."""
import json
import os
import stat
import subprocess
import sys
import threading

import numpy as np
import pytest

import deepscope as ds
from deepscope import arch, files, nn, optim
from deepscope.runs import History, Run, _holder
from deepscope.train import fit, step


# -- files.atomic_write ---------------------------------------------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_write_follows_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        files.atomic_write(tmp_path / "a.txt", "hello")
        files.atomic_write(tmp_path / "b.bin", lambda tmp: tmp.write_bytes(b"x"))
    finally:
        os.umask(old)
    for name in ("a.txt", "b.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask


def test_atomic_write_replaces_a_symlink_never_follows_it(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("the user's file")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "m.json").symlink_to(outside)
    files.atomic_write(tmp_path / "run" / "m.json", "new")
    assert outside.read_text() == "the user's file"
    assert not (tmp_path / "run" / "m.json").is_symlink() and (tmp_path / "run" / "m.json").read_text() == "new"


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    (tmp_path / "f").write_text("old")

    def fail(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        files.atomic_write(tmp_path / "f", fail)
    assert (tmp_path / "f").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_json_is_strict():
    assert files.to_json({"a": float("nan"), "b": [float("inf"), 1.5]}) == '{"a": null, "b": [null, 1.5]}'


# -- Run: create, hold, refuse ---------------------------------------------------------------------------
def test_runs_started_in_the_same_second_get_two_folders(tmp_path):
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from deepscope.runs import Run; "
            "r = Run.create(None, 'train'); print(r.path); import time; time.sleep(0.5)")
    src = os.path.join(os.path.dirname(ds.__file__), "..")
    procs = [subprocess.Popen([sys.executable, "-c", code, src], cwd=tmp_path, stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    paths = [p.communicate()[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(paths)) == 4 and all(path.startswith("runs/train-") for path in paths)


def test_a_second_writer_is_refused_naming_the_first(tmp_path):
    with Run.create(tmp_path / "run"):
        with pytest.raises(ds.DataError, match=rf"being written by another deepscope process \(pid {os.getpid()}"):
            Run.resume(tmp_path / "run")
    Run.resume(tmp_path / "run").close()  # free again


def test_a_writer_refused_before_the_holder_wrote_its_pid_reads_it_when_it_comes(tmp_path):
    # The holder writes "pid N: command" right after taking the lock; a process refused in that moment had read an
    # empty file and named "another process" (seen once in test_rel_cli_runs's four trains at once).
    path = tmp_path / "lock"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDWR)
    try:
        late = threading.Timer(0.05, lambda: path.write_text("pid 123: deepscope train\n"))
        late.start()
        assert _holder(fd) == "pid 123: deepscope train"
        late.join()
        path.write_bytes(b"")
        assert _holder(fd, wait_s=0.05) == "its pid not yet written"
    finally:
        os.close(fd)


def test_out_refuses_a_folder_that_is_not_a_run_and_touches_nothing(tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "model.safetensors").write_bytes(b"the user's weights")
    with pytest.raises(ds.DataError, match="is a folder with files that are not a deepscope run"):
        Run.create(user)
    assert sorted(p.name for p in user.iterdir()) == ["model.safetensors"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ds.DataError, match="is a file, not a folder"):
        Run.create(tmp_path / "file")


def test_out_refuses_an_existing_run(tmp_path):
    with Run.create(tmp_path / "r") as run:
        run.write_config({"arch": "8-3"}, "deepscope train")
    with pytest.raises(ds.DataError, match="already holds a run; choose another --out, or continue it with "
                                           "deepscope train --resume"):
        Run.create(tmp_path / "r", resume_hint="deepscope train")


def test_config_names_the_command_and_open_reads_it(tmp_path):
    with Run.create(tmp_path / "r") as run:
        run.write_config({"lr": 0.1}, "deepscope train")
    assert Run.open(tmp_path / "r").config == {"lr": 0.1, "command": "deepscope train"}
    with pytest.raises(ds.DataError, match="opened to read"):
        Run.open(tmp_path / "r").write_config({}, "x")
    with pytest.raises(ds.DataError, match="is not a run folder"):
        Run.open(tmp_path)


def test_metrics_are_strict_json_lines(tmp_path):
    with Run.create(tmp_path / "r") as run:
        run.write_metrics(History([{"epoch": 1, "val_acc": float("nan")}]))
        text = (tmp_path / "r" / "metrics.jsonl").read_text()
        assert "NaN" not in text and json.loads(text) == {"epoch": 1, "val_acc": None}
        assert run.history.records == [{"epoch": 1, "val_acc": None}]


def test_checkpoint_round_trip_with_schedule_state(tmp_path):
    ds.manual_seed(0)
    model = arch.build("8-4-3")
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = optim.HalveOnPlateau(opt, patience=2)
    sched.step({"val_acc": 0.5})
    sched.step({"val_acc": 0.4})
    with Run.create(tmp_path / "r") as run:
        run.save_checkpoint(model, opt, 3, History([{"epoch": 3}]), {"Schedule": sched.state_dict()})
    model2 = arch.build("8-4-3")
    opt2 = optim.SGD(model2.parameters(), lr=0.5, momentum=0.9)
    sched2 = optim.HalveOnPlateau(opt2, patience=2)
    ck = Run.open(tmp_path / "r").load_checkpoint(model2, opt2)
    sched2.load_state_dict(ck.state["Schedule"])
    assert ck.epoch == 3 and ck.history.records == [{"epoch": 3}] and opt2.lr == 0.1
    assert (sched2.best, sched2.bad_epochs) == (0.5, 1)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(model2.state_dict()[k], v)


def test_schedules_have_state_dicts():
    opt = optim.SGD(arch.build("8-3").parameters(), lr=1.0)
    cos = optim.CosineLR(opt, 10)
    cos.step({})
    other = optim.CosineLR(optim.SGD(arch.build("8-3").parameters(), lr=5.0), 10)
    other.load_state_dict(cos.state_dict())
    assert other.state_dict() == cos.state_dict() == {"epoch": 1, "base": 1.0}


# -- step ------------------------------------------------------------------------------------------------
def test_step_is_forward_cost_backward_update():
    ds.manual_seed(0)
    model = arch.build("8-4-3")
    opt = optim.SGD(model.parameters(), lr=0.1)
    x = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1])
    before = {k: v.copy() for k, v in model.state_dict().items()}
    cost = nn.LogLikelihoodCost()
    loss, out = step(model, cost, opt, x, y)
    assert loss == pytest.approx(float(cost(out, y))) and out.shape == (5, 3)
    for (k, v), p in zip(before.items(), model.parameters()):
        np.testing.assert_allclose(model.state_dict()[k], v - 0.1 * p.grad, rtol=1e-6, atol=1e-7)


def test_step_stops_before_the_update_on_a_nonfinite_cost():
    ds.manual_seed(0)
    model = arch.build("8-4-3")
    model[1].weight.data[0, 0] = np.nan
    opt = optim.SGD(model.parameters(), lr=0.1)
    w = model[3].weight.data.copy()
    with pytest.raises(ds.NonFiniteError, match="the cost became nan at step 1"):
        step(model, nn.LogLikelihoodCost(), opt, np.ones((2, 8), np.float32), np.array([0, 1]))
    np.testing.assert_array_equal(model[3].weight.data, w)


def test_a_run_stopped_in_its_first_epoch_restarts(tmp_path):
    X = np.random.default_rng(0).standard_normal((40, 8)).astype(np.float32)
    y = np.arange(40) % 3
    with Run.create(tmp_path / "r") as run:
        run.write_config({"arch": "8-3"}, "deepscope train")   # then killed before epoch 1 ended
    ds.manual_seed(0)
    model = arch.build("8-3")
    with Run.resume(tmp_path / "r") as run:
        hist = fit(model, nn.LogLikelihoodCost(), optim.SGD(model.parameters(), lr=0.1), (X, y), epochs=2,
                   batch_size=10, run=run, callbacks=[])
    assert [r["epoch"] for r in hist.records] == [1, 2] and len(Run.open(tmp_path / "r").history) == 2


# -- the commands: resume, a closed stdout -------------------------------------------------------------------
def _text_args(corpus, out, epochs):
    return ["rnn", "text", "--corpus", str(corpus), "--hidden", "8", "--embedding", "4", "--epochs", str(epochs),
            "-m", "4", "--seq-len", "20", "--sample-length", "0", "--quiet", "--out", str(out)]


def _numbers(run):
    return [{k: v for k, v in r.items() if k not in ("seconds", "chars_per_s")} for r in Run.open(run).history.records]


def test_rnn_text_resumes_to_the_same_numbers(tmp_path, capsys):
    from deepscope.cli import main
    corpus = tmp_path / "c.txt"
    corpus.write_text("to be or not to be, that is the question. " * 30)
    assert main(_text_args(corpus, tmp_path / "straight", 2)) == 0
    assert main(_text_args(corpus, tmp_path / "stopped", 1)) == 0
    assert main(["rnn", "text", "--resume", str(tmp_path / "stopped"), "--epochs", "2", "--quiet"]) == 0
    assert _numbers(tmp_path / "stopped") == _numbers(tmp_path / "straight") and len(_numbers(tmp_path / "straight")) == 2


def test_a_closed_stdout_loses_no_finished_epoch(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("to be or not to be, that is the question. " * 30)
    argv = [a for a in _text_args(corpus, tmp_path / "run", 3) if a != "--quiet"]
    src = os.path.join(os.path.dirname(ds.__file__), "..")
    proc = subprocess.Popen([sys.executable, "-m", "deepscope.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": src})
    proc.stdout.readline()          # `| head -1`: read the first line, then close the pipe
    proc.stdout.close()
    assert proc.wait() == 141
    assert [r["epoch"] for r in Run.open(tmp_path / "run").history.records] == [1]   # saved before printed
