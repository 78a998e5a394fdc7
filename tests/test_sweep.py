"""Sweeps on Ray Tune: the trial list, the sweep folder, and the faults a sweep survives.

The trial list and the folder are plain Python. The Ray tests start a local Ray inside this process (a few
seconds each) and check that nothing of it is left running afterwards: a worker killed with SIGKILL in the
middle of a trial (the trial continues from its checkpoint), and Ctrl-C followed by ``resume`` (nothing that
had finished is run again).
"""
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from deepscope import sweep
from deepscope.cli import main
from deepscope.data import mnist as mnist_module
from deepscope.errors import ConfigError, DataError

# A few seconds of real training per trial: a sigmoid net on 2,000 images of the shipped MNIST sample.
TRAIN = ["train", "--arch", "784-30-10:sigmoid", "-m", "10", "--eta", "0.1", "--momentum", "0", "--init", "book",
         "--schedule", "none", "--train-size", "2000", "--quiet"]


# ------------------------------------------------------------------------------------------- the trial list

def test_grid_times_seeds_in_order():
    trials = sweep.expand([("eta", ["0.1", "0.3"]), ("batch-size", ["10", "32"])], seeds=2, first_seed=5)
    assert [(t.options, t.seed) for t in trials][:3] == [
        ({"eta": "0.1", "batch-size": "10"}, 5), ({"eta": "0.1", "batch-size": "10"}, 6),
        ({"eta": "0.1", "batch-size": "32"}, 5)]
    assert len(trials) == 8 and len({t.name for t in trials}) == 8
    assert trials[0].name == "eta-0.1_batch-size-10_seed-5"


def test_random_samples_are_reproducible_and_inside_the_space():
    space = [sweep.parse_space("eta=0.001:0.1:log"), sweep.parse_space("epochs=2:6")]
    a = sweep.expand(samples=20, space=space)
    assert a == sweep.expand(samples=20, space=space)              # --resume relies on the same list
    etas = [float(t.options["eta"]) for t in a]
    assert all(0.001 <= e <= 0.1 for e in etas) and min(etas) < 0.01 < max(etas)   # log-uniform spreads
    assert {t.options["epochs"] for t in a} <= {"2", "3", "4", "5", "6"}


def test_trial_command_line():
    t = sweep.Trial({"eta": "0.1"}, 3)
    assert sweep.trial_argv(["train", "--epochs", "2"], t, "S/x", resume=False) == [
        "train", "--epochs", "2", "--eta", "0.1", "--seed", "3", "--out", "S/x"]
    assert sweep.trial_argv(["train"], t, "S/x", resume=True)[-2:] == ["--resume", "S/x"]


@pytest.mark.parametrize("grid, space, samples, message", [
    (["eta"], [], 0, "expected KEY=V1,V2"),
    (["eta="], [], 0, "expected KEY=V1,V2"),
    (["--eta=1"], [], 0, "expected KEY=V1,V2"),
    (["eta=1,1"], [], 0, "share a folder name"),
    (["eta=1", "eta=2"], [], 0, "swept twice"),
    ([], ["eta=1:0.1"], 3, "LOW < HIGH"),
    ([], ["eta=0:1:log"], 3, "LOW > 0"),
    ([], ["eta=0.1:1:lin"], 3, "expected KEY=LOW:HIGH"),
    ([], ["eta=0.1:1"], 0, "go together"),
])
def test_bad_sweep_options_are_one_clear_error(grid, space, samples, message):
    with pytest.raises(ConfigError, match=message):
        sweep.expand([sweep.parse_grid(g) for g in grid], samples=samples,
                     space=[sweep.parse_space(s) for s in space])


def test_a_sweep_folder_is_never_overwritten(tmp_path):
    folder = sweep.SweepFolder.create(tmp_path / "s", ["train"], sweep.expand(seeds=2))
    folder.record({"trial": "seed-0", "options": {}, "seed": 0, "status": "done", "val_acc": 0.5})
    with pytest.raises(DataError, match="--resume"):
        sweep.SweepFolder.create(tmp_path / "s", ["train"], sweep.expand(seeds=2))
    again = sweep.SweepFolder.open(tmp_path / "s")
    assert [t.name for t in again.missing()] == ["seed-1"]
    assert (tmp_path / "s" / "trials.csv").read_text().splitlines()[1].startswith("seed-0,0,done,")
    with pytest.raises(DataError, match="not a sweep folder"):
        sweep.SweepFolder.open(tmp_path)


def test_summary_is_mean_and_spread_over_seeds():
    rows = [{"options": {"eta": e}, "seed": s, "status": "done", "test_acc": a}
            for e, s, a in [("0.1", 0, 0.5), ("0.1", 1, 0.7), ("0.3", 0, 0.9), ("0.3", 1, None)]]
    rows.append({"options": {"eta": "0.3"}, "seed": 2, "status": "failed", "test_acc": 0.1})
    s = {r["eta"]: r for r in sweep.summarize(rows, ["eta"], "test_acc")}
    assert s["0.1"]["n"] == 2 and s["0.1"]["mean"] == pytest.approx(0.6) and s["0.1"]["min"] == 0.5
    assert s["0.3"]["n"] == 1 and s["0.3"]["mean"] == pytest.approx(0.9)     # failed and empty rows left out


# -------------------------------------------------------------------------------------------- the command

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="the sweep tests need ray[tune] (the test extra)")


@pytest.mark.parametrize("argv", [["--address", "127.0.0.1:6379"], ["--scheduler", "asha"]])
def test_what_needs_ray_says_how_to_get_it_in_one_line(monkeypatch, capsys, tmp_path, argv):
    monkeypatch.setattr(sweep.importlib.util, "find_spec", lambda name: None)
    assert main(["sweep", *argv, "--seeds", "2", "--out", str(tmp_path / "s"), "--", "scope", "speed"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install -e ".[sweep]"' in err, err


def test_without_ray_the_trials_run_here_one_after_another(monkeypatch, capsys, tmp_path, mnist_sample):
    monkeypatch.setattr(sweep.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(sweep, "_run_on_ray", None)        # calling it would fail the test
    out = tmp_path / "s"
    assert main(["sweep", "--seeds", "2", "--grid", "activation=sigmoid,relu", "--out", str(out), "--quiet", "--",
                 "scope", "speed", "--layers", "784,5,5,10", "--steps", "3", "--train-size", "50",
                 "--data-dir", str(mnist_sample), "--quiet"]) == 0
    assert "Ray is not installed" in capsys.readouterr().out
    rows = json.loads((out / "trials.json").read_text())
    assert [(r["options"]["activation"], r["seed"], r["status"], r["attempts"]) for r in rows] == [
        ("sigmoid", 0, "done", 1), ("sigmoid", 1, "done", 1), ("relu", 0, "done", 1), ("relu", 1, "done", 1)]
    assert "relu neurons" in (out / "logs" / "activation-relu_seed-1.log").read_text()
    assert (out / "activation-relu_seed-1" / "speed.png").is_file()


class Recorder:
    """A command for sweeps run in this process: records each call; Ctrl-C on the call numbered ``stop``."""

    def __init__(self, stop=None):
        self.calls, self.stop = [], stop

    def __call__(self, argv):
        self.calls.append(argv)
        if len(self.calls) == self.stop:
            time.sleep(0.2)
            raise KeyboardInterrupt
        return 0


def test_one_worker_runs_here_longest_first_and_ctrl_c_then_resume_counts_every_attempt(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "_run_on_ray", None)        # --workers 1: no Ray at all
    folder = sweep.SweepFolder.create(tmp_path / "s", ["cmd"], sweep.expand([("depth", ["2", "6", "4"])]))
    cost = lambda t: int(t.options["depth"])                # noqa: E731
    first = Recorder(stop=2)
    result = sweep.run(folder, first, workers=1, progress=False, longest_first=cost)
    assert result.interrupted and [a[2] for a in first.calls] == ["6", "4"]    # deepest first
    assert [r["trial"] for r in result.rows] == ["depth-6_seed-0"]
    again = Recorder()
    result = sweep.run(sweep.SweepFolder.open(tmp_path / "s"), again, workers=1, progress=False,
                       longest_first=cost)
    assert not result.interrupted and [a[2] for a in again.calls] == ["4", "2"]   # only what was missing
    rows = {r["trial"]: r for r in result.rows}
    assert [r["trial"] for r in result.rows] == [t.name for t in folder.trials]   # the table in trial order
    interrupted = rows["depth-4_seed-0"]
    assert interrupted["attempts"] == 2 and interrupted["seconds"] >= 0.2    # the interrupted attempt counts
    assert rows["depth-2_seed-0"]["attempts"] == 1 and rows["depth-2_seed-0"]["seconds"] < 0.2


def test_a_trial_that_raises_is_a_row_with_its_error_and_the_sweep_goes_on(tmp_path):
    def command(argv):
        if argv[2] == "bad":
            raise ValueError("a bug\nwith a second line")
        return 3 if argv[2] == "three" else 0

    folder = sweep.SweepFolder.create(tmp_path / "s", ["cmd"], sweep.expand([("x", ["bad", "three", "ok"])]))
    rows = sweep.run(folder, command, workers=1, progress=False).rows
    assert [(r["status"], r.get("error")) for r in rows] == [
        ("error", "ValueError: a bug"), ("failed", "exit code 3; see logs/x-three_seed-0.log"), ("done", None)]


def test_mnist_is_decompressed_once_per_process_and_each_load_gets_its_own_arrays(tmp_path, monkeypatch):
    folder = mnist_module.write_sample_folder(tmp_path / "data")
    reads = []
    load_idx = mnist_module.idx.load_idx
    monkeypatch.setattr(mnist_module.idx, "load_idx", lambda path, **kw: reads.append(path) or load_idx(path, **kw))
    a = mnist_module.load_mnist(data_dir=folder)
    assert len(reads) == 4
    a.train[0][:] = 0.5                                       # a caller changing its arrays changes nobody else's
    b = mnist_module.load_mnist(data_dir=folder)
    assert len(reads) == 4 and b.train[0].max() == 1.0 and b.train[0].flags.writeable
    assert b.sha256 == a.sha256 and b.test[1].tolist() == a.test[1].tolist()
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    data = labels.read_bytes()
    labels.unlink()
    labels.write_bytes(data)                                   # the same name, another file: read again
    mnist_module.load_mnist(data_dir=folder)
    assert len(reads) == 5 and reads[-1] == labels


@needs_ray
@pytest.mark.parametrize("argv, message", [
    (["--grid", "eta=0.1", "--", "train", "--bogus", "1"], "unrecognized arguments: --bogus 1"),
    (["--grid", "eta=x", "--", "train"], "argument --eta: expected a number, got 'x'"),
    (["--seeds", "2", "--", "train", "--seed", "3"], "the sweep sets --seed of each trial"),
    (["--seeds", "2", "--", "train", "--out=x"], "the sweep sets --out of each trial"),
    (["--seeds", "2"], "name the command to sweep after --"),
    (["--grid", "eta=0.1", "--", "scope", "chain"], "unrecognized arguments: --eta 0.1 --out"),
    (["--grid", "eta", "--", "train"], "expected KEY=V1,V2"),
    (["--resume", "DIR", "--grid", "eta=1"], "give no command"),
    (["--resume", "DIR"], "not a sweep folder"),
])
def test_bad_sweeps_stop_before_ray_starts_with_one_line(argv, message, tmp_path, capsys):
    argv = [str(tmp_path) if a == "DIR" else a for a in argv]
    assert main(["sweep", "--out", str(tmp_path / "s"), *argv] if "--resume" not in argv else ["sweep", *argv]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "s").exists()   # nothing written


# ----------------------------------------------------------------------------------------- on a local Ray


@pytest.fixture
def mnist_sample(tmp_path):
    """The MNIST sample shipped with deepscope as an IDX folder (no download in a Ray worker)."""
    return mnist_module.write_sample_folder(tmp_path / "data")


def _psutil():
    import ray  # noqa: F401  (Ray puts the psutil it ships on the path)
    import psutil
    return psutil


def _children():
    return _psutil().Process().children(recursive=True)


def _assert_nothing_left(before=()):
    """No process this test started (Ray's GCS, raylet, workers) outlives it."""
    psutil = _psutil()
    deadline = time.time() + 15
    left = [p for p in _children() if p.pid not in before]
    while left and time.time() < deadline:
        time.sleep(0.2)
        left = [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, f"still running: {[p.name() for p in left]}"


def _epochs(run_dir: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@needs_ray
def test_a_killed_worker_resumes_its_trial_from_the_checkpoint(tmp_path, mnist_sample):
    epochs = 200    # ~10 ms an epoch on 2 cores: the trial must outlast the attempt clock's first tick (0.5 s) by far
    folder = sweep.SweepFolder.create(tmp_path / "sweep", [*TRAIN, "--epochs", str(epochs), "--data-dir",
                                                           str(mnist_sample)], sweep.expand(seeds=2))
    victim = folder.trials[0]
    killed = {}

    def clock_reading(path):
        try:
            return json.loads(path.read_text())[-1]
        except (OSError, ValueError, IndexError):
            return 0.0

    def kill_after_first_epoch():
        metrics, log = folder.run_dir(victim) / "metrics.jsonl", folder.log_path(victim)
        clock = folder.path / "logs" / f"{victim.name}.seconds.json"
        deadline = time.time() + 120
        # after the first epoch's checkpoint, once the attempt's clock has ticked while it trained (every 0.5 s; an
        # epoch of this net can take less, and a worker killed between ticks loses that half second by design)
        while time.time() < deadline and not (sweep._has_checkpoint(folder.run_dir(victim))
                                              and metrics.exists() and metrics.read_text().count("\n") >= 1
                                              and clock_reading(clock) > 0.4):
            time.sleep(0.02)
        pid = int(re.search(r"pid (\d+)", log.read_text()).group(1))
        killed.update(pid=pid, after=metrics.read_text().count("\n"), ran=clock_reading(clock))
        os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_after_first_epoch, daemon=True)
    before = {p.pid for p in _children()}
    killer.start()
    result = sweep.run(folder, main, workers=2, progress=False)
    killer.join(5)
    assert 1 <= killed["after"] < epochs, "the kill must land in the middle of the trial"
    rows = json.loads((folder.path / "trials.json").read_text())
    assert sorted(r["trial"] for r in rows) == sorted(t.name for t in folder.trials)   # one row per trial
    assert all(r["status"] == "done" for r in rows) and not result.interrupted
    row = next(r for r in rows if r["trial"] == victim.name)
    assert row["resumed_after_epoch"] >= 1                         # continued from a checkpoint, not from scratch
    assert row["attempts"] == 2 and row["seconds"] > killed["ran"]   # the killed attempt's time counts too
    assert _epochs(folder.run_dir(victim)) == list(range(1, epochs + 1))   # every epoch exactly once
    log = folder.log_path(victim).read_text()
    assert f"pid {killed['pid']}:" in log and f"--resume {folder.run_dir(victim)}" in log
    assert all(r["node_id"] for r in rows)
    _assert_nothing_left(before)


def raising_command(argv):
    """A command for a Ray sweep (sent to the workers by value, see the test): a bug, an exit code, a success."""
    if argv[2] == "bad":
        raise ValueError("a bug\nwith a second line")
    return 3 if argv[2] == "three" else 0


@needs_ray
def test_on_ray_a_trial_that_raises_is_a_row_with_its_error_and_is_not_run_again(tmp_path):
    import ray
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])   # the workers cannot import this test file
    try:
        folder = sweep.SweepFolder.create(tmp_path / "s", ["cmd"], sweep.expand([("x", ["bad", "three", "ok"])]))
        before = {p.pid for p in _children()}
        rows = sweep.run(folder, raising_command, workers=2, progress=False).rows
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert [(r["status"], r.get("error")) for r in rows] == [
        ("error", "ValueError: a bug"), ("failed", "exit code 3; see logs/x-three_seed-0.log"), ("done", None)]
    assert folder.log_path(folder.trials[0]).read_text().count("[deepscope sweep]") == 1   # a bug: not retried
    assert all(r["node_id"] for r in rows[1:])
    _assert_nothing_left(before)


# The sweep stops after recording its first finished trial until Ctrl-C comes: trials here take 0.1-0.4 s, so a
# Ctrl-C sent "after the first row" could otherwise land after the last (the whole sweep ends ~0.1 s after its first
# row when the workers are warm), and the test would pass or fail by timing
SCRIPT = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)   # a shell's background job starts with Ctrl-C ignored
from deepscope import sweep
from deepscope.cli import main
record = sweep.SweepFolder.record
def record_and_wait_for_ctrl_c(self, row):
    record(self, row)
    time.sleep(60)
sweep.SweepFolder.record = record_and_wait_for_ctrl_c
folder = sweep.SweepFolder.create(sys.argv[1], sys.argv[2:], sweep.expand([("eta", ["0.1", "0.3"])], seeds=2))
result = sweep.run(folder, main, workers=2, progress=False)
sys.exit(130 if result.interrupted else 0)
"""


@needs_ray
def test_ctrl_c_keeps_finished_trials_and_resume_runs_only_the_rest(tmp_path, mnist_sample, capsys):
    psutil = _psutil()
    out = tmp_path / "sweep"
    command = [*TRAIN, "--epochs", "5", "--data-dir", str(mnist_sample)]
    env = {**os.environ, "PYTHONPATH": str(Path(sweep.__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(SCRIPT), str(out), *command], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 180
    while not (out / "trials.json").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    started = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 130, output
    for p in started:   # the interrupted sweep took its Ray with it (wait raises TimeoutExpired otherwise)
        try:
            p.wait(timeout=15)
        except psutil.NoSuchProcess:
            pass

    folder = sweep.SweepFolder.open(out)
    finished = [t for t in folder.trials if folder.rows.get(t.name, {}).get("status") == "done"]
    assert finished and len(finished) < len(folder.trials), "Ctrl-C must come between the first and last trial"
    stamps = {t.name: {f.name: f.stat().st_mtime_ns for f in folder.run_dir(t).iterdir()} for t in finished}

    before = {p.pid for p in _children()}
    assert main(["sweep", "--resume", str(out), "--workers", "2", "--quiet"]) == 0
    assert f"{len(folder.trials) - len(finished)} of {len(folder.trials)} trials to run" in capsys.readouterr().out
    rows = json.loads((out / "trials.json").read_text())
    assert [r["trial"] for r in rows] == [t.name for t in folder.trials]
    assert all(r["status"] == "done" for r in rows)
    for t in finished:   # nothing that had finished was run again
        assert {f.name: f.stat().st_mtime_ns for f in folder.run_dir(t).iterdir()} == stamps[t.name]
        assert folder.log_path(t).read_text().count("[deepscope sweep]") == 1
    for t in folder.trials:
        assert _epochs(folder.run_dir(t)) == [1, 2, 3, 4, 5]
    assert (out / "sweep.png").is_file() and (out / "trials.csv").read_text().count("\n") == 1 + len(rows)
    _assert_nothing_left(before)


# ------------------------------------------------------------------------- the book's experiments as sweeps

def test_scope_speed_over_seeds_is_one_trial_per_seed_with_the_numbers_of_one_process(tmp_path, mnist_sample,
                                                                                       monkeypatch, capsys):
    from deepscope.book.ch5 import speed_experiment
    monkeypatch.setattr(sweep, "_run_on_ray", None)        # --workers 1: here, without Ray
    out = tmp_path / "speed"
    assert main(["scope", "speed", "--layers", "784,10,10,10", "--seeds", "3", "--seed", "4", "--steps", "5",
                 "--train-size", "100", "--data-dir", str(mnist_sample), "--out", str(out), "--workers", "1",
                 "--quiet"]) == 0
    assert "mean ± std over 3 seeds" in capsys.readouterr().out
    rows = json.loads((out / "trials.json").read_text())
    assert [(r["trial"], r["status"]) for r in rows] == [("seed-4", "done"), ("seed-5", "done"), ("seed-6", "done")]
    summary = json.loads((out / "summary.json").read_text())
    alone = speed_experiment([784, 10, 10, 10], steps=5, seeds=3, seed=4, n_train=100, data_dir=mnist_sample,
                             progress=False)
    assert summary["seeds"] == [4, 5, 6]
    assert summary["init_speed_mean"] == pytest.approx(alone["init_speeds"].mean(axis=0).tolist(), rel=1e-6)
    assert summary["final_speed_mean"] == pytest.approx(alone["speeds"][:, -1, :].mean(axis=0).tolist(), rel=1e-6)
    assert (out / "speed.png").is_file() and (out / "seed-5" / "speed.jsonl").is_file()


def test_the_ensemble_trains_its_nets_as_trials_with_the_settings_given_and_votes(tmp_path, mnist_sample,
                                                                                  monkeypatch, capsys):
    from deepscope.book import ch6
    from deepscope.runs import Run
    monkeypatch.setattr(sweep, "_run_on_ray", None)
    out = tmp_path / "ens"
    assert main(["book", "ch6", "ensemble", "--epochs", "1", "--runs", "2", "--train-size", "100", "--lr", "0.01",
                 "--momentum", "0.9", "-m", "20", "--init", "he", "--no-expand", "--data-dir", str(mnist_sample),
                 "--out", str(out), "--workers", "1", "--quiet"]) == 0
    said = capsys.readouterr().out
    vote = json.loads((out / "vote.json").read_text())
    command = " ".join(vote["command"])
    assert "-m 20 --lr 0.01 --lmbda 0.0 --momentum 0.9 --init he" in command and "--expand" not in command
    assert vote["changed"] == {"eta": 0.01, "mini_batch_size": 20, "momentum": 0.9, "init": "he", "expanded": False}
    assert "μ=0.9" in vote["settings"] and "1 epoch," in vote["settings"] and f"{vote['vote']:.2f}%" in said
    X, y = mnist_module.load_mnist(data_dir=mnist_sample).test
    predictions = [ch6._predict(Run.open(out / f"seed-{k}").load_model(), X) for k in range(2)]
    assert vote["members"] == [pytest.approx(100 * (p == y).mean()) for p in predictions]
    assert vote["vote"] == pytest.approx(100 * (ch6.ensemble_predict(predictions) == y).mean())


def test_book_settings_that_network3_cannot_take_are_one_line(capsys, tmp_path):
    assert main(["book", "ch6", "baseline", "--quirks", "--momentum", "0.9", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--momentum and --init need deepscope's training" in err


@needs_ray
def test_without_address_ray_starts_here_whatever_ray_address_or_a_stale_cluster_file_names(monkeypatch):
    import ray
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")   # nothing listens there (as a dead cluster in /tmp/ray)
    before = {p.pid for p in _children()}
    sweep._start_ray(None, 1)
    try:
        assert ray.is_initialized() and ray.cluster_resources()["CPU"] >= 1
        # a trial runs at the sweep's own priority (Ray's default would lower its workers to nice 15)
        assert ray.get(ray.remote(lambda: os.nice(0)).remote()) == os.nice(0)
    finally:
        ray.shutdown()
    _assert_nothing_left(before)


@needs_ray
def test_stopping_ray_stops_the_monitor_first_and_leaves_no_process():
    import ray
    before = {p.pid for p in _children()}
    sweep._start_ray(None, None)
    monitor = ray._private.worker._global_node.all_processes["monitor"][0].process
    sweep._stop_ray()
    assert not ray.is_initialized() and monitor.poll() is not None
    _assert_nothing_left(before)


@needs_ray
@pytest.mark.slow
def test_with_asha_the_trials_run_on_tune_which_reads_their_epochs_and_stops_the_weak(tmp_path, mnist_sample):
    """--scheduler asha: Ray Tune runs the trials and, from the epochs they report, stops one whose validation
    accuracy trails (one at a time: the strong trial has set the bar when the weak one ends its first epoch; the
    epochs are many so that the weak trial is stopped long before its last, even on a busy machine)."""
    epochs = 40
    folder = sweep.SweepFolder.create(tmp_path / "s", [*TRAIN, "--epochs", str(epochs), "--data-dir",
                                                       str(mnist_sample)], sweep.expand([("eta", ["3.0", "0.00001"])]))
    before = {p.pid for p in _children()}
    result = sweep.run(folder, main, workers=1, scheduler="asha", progress=False)
    assert not result.interrupted and all(r["node_id"] for r in result.rows)
    assert [r["status"] for r in result.rows] == ["done", "stopped"]
    strong, weak = (_epochs(folder.run_dir(t)) for t in folder.trials)
    assert strong == list(range(1, epochs + 1)) and 1 <= len(weak) < epochs and weak == list(range(1, len(weak) + 1))
    assert (folder.path / ".tune").is_dir()
    _assert_nothing_left(before)


@needs_ray
@pytest.mark.slow
def test_a_sweep_joins_a_cluster_that_ray_start_made_with_its_token(tmp_path, mnist_sample):
    """``ray start --head`` turns token authentication on when a token exists (as ``~/.ray/auth_token`` does after
    any local ``ray.init()``); ``deepscope sweep --address`` must get in, as the README's two-node recipe does."""
    import secrets
    import socket
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    env["HOME"] = str(home)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray_exe = str(Path(sys.executable).with_name("ray"))
    head = subprocess.Popen([ray_exe, "start", "--head", "--port", str(port), "--num-cpus", "1",
                             "--include-dashboard=false", "--disable-usage-stats", "--block"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        out = tmp_path / "sweep"
        run = subprocess.run([sys.executable, "-m", "deepscope.cli", "sweep", "--address", f"127.0.0.1:{port}",
                              "--seeds", "2", "--out", str(out), "--", *TRAIN, "--epochs", "1",
                              "--data-dir", str(mnist_sample)],
                             env=env, capture_output=True, text=True, timeout=240)
        assert run.returncode == 0, run.stderr[-2000:]
        rows = json.loads((out / "trials.json").read_text())
        assert len(rows) == 2 and all(r["status"] == "done" for r in rows)
    finally:
        head.terminate()             # a `ray start --block` stops its node's processes when it ends
        head.wait(60)
