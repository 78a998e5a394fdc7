"""Crash safety as a property (issue 9, classes 9 and 12): a small `deepscope train` is killed with SIGKILL at
random moments -- while it loads data, in the middle of an epoch, and inside the writes of its checkpoint,
metrics, model and config -- and each time continued with `--resume` (or started again where it died before
its run existed). The final weights, checkpoint and metrics are identical to those of an uninterrupted run,
and no temporary file is left in the run folder.

The kills inside writes are placed exactly: the training process replaces ``os.replace`` (the commit step of
every atomic write) by a version that kills the process just before or just after the k-th rename.
"""
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from rel_helpers import ROOT, write_fake_mnist

OPTIONS = ["--arch", "784-16-10:sigmoid", "--epochs", "4", "-m", "10", "--eta", "0.1", "--momentum", "0.9",
           "--schedule", "cosine", "--quiet", "--seed", "3"]

# The child: optionally dies at the k-th os.replace (phase "before" or "after" the rename), else runs normally.
CHILD = r"""
import os, signal, sys
kill_at, phase = int(os.environ.get("KILL_AT_REPLACE", "0")), os.environ.get("KILL_PHASE", "before")
if kill_at:
    real, calls = os.replace, [0]
    def replace(src, dst, **kw):
        calls[0] += 1
        if calls[0] == kill_at and phase == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        real(src, dst, **kw)
        if calls[0] == kill_at and phase == "after":
            os.kill(os.getpid(), signal.SIGKILL)
    os.replace = replace
from deepscope.cli import main
sys.exit(main(sys.argv[1:]))
"""


def launch(args, env_extra=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OPENBLAS_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-c", CHILD, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def train_args(data, run):
    return ["train", "--data-dir", str(data), "--out", str(run), *OPTIONS]


def finish(data, run):
    """Continue the run to its end the way a user would: --resume if it exists, else start it again."""
    if (run / "config.json").exists():
        args = ["train", "--resume", str(run), "--quiet"]
    else:
        args = train_args(data, run)
    proc = launch(args)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, (args, out, err)
    return out, err


def outcome(run):
    """Everything the run keeps, minus the wall-clock seconds of each epoch."""
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for m in metrics:
        m.pop("seconds")
    return {"metrics": metrics, "model": load_file(str(run / "model.safetensors")),
            "checkpoint": load_file(str(run / "checkpoint.safetensors")),
            "model.json": (run / "model.json").read_text()}


def same(a, b):
    assert a["metrics"] == b["metrics"]
    assert a["model.json"] == b["model.json"]
    for part in ("model", "checkpoint"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            np.testing.assert_array_equal(a[part][k], b[part][k], err_msg=f"{part} {k}")


def leftovers(run):
    return sorted(p.name for p in run.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    data = root / "data"
    write_fake_mnist(data, n_train=240, n_test=40, seed=5)
    run = root / "reference"
    t0 = time.perf_counter()
    proc = launch(train_args(data, run), {"KILL_AT_REPLACE": "0"})
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    seconds = time.perf_counter() - t0
    # how many renames a whole run makes: count them in a second, instrumented run that never dies
    probe = root / "probe"
    counted = subprocess.run([sys.executable, "-c", CHILD.replace("if kill_at:", "if True:").replace(
        "    os.replace = replace\n", "    os.replace = replace\n    import atexit; atexit.register(lambda: "
        "print('RENAMES', calls[0], file=sys.stderr))\n"), *train_args(data, probe)],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "KILL_AT_REPLACE": "1000000"},
        capture_output=True, text=True, timeout=300)
    renames = int(counted.stderr.split("RENAMES")[-1].split()[0])
    return {"data": data, "root": root, "outcome": outcome(run), "seconds": seconds, "renames": renames}


def kill_and_resume(reference, name, at_seconds=None, at_rename=None, phase="before"):
    run = reference["root"] / name
    if at_rename is None:
        proc = launch(train_args(reference["data"], run))
        time.sleep(at_seconds)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    else:
        proc = launch(train_args(reference["data"], run), {"KILL_AT_REPLACE": str(at_rename), "KILL_PHASE": phase})
        proc.communicate(timeout=300)
        assert proc.returncode == -signal.SIGKILL, f"the run ended before rename {at_rename}"
    finish(reference["data"], run)
    assert leftovers(run) == []
    same(outcome(run), reference["outcome"])


def plan(n, seed):
    """``n`` kills: a third at random times across the run (start-up and data loading, mid-epoch), the rest just
    before or just after a random one of the run's atomic renames (config, metrics, checkpoint, model)."""
    rng = random.Random(seed)
    kills = []
    for i in range(n):
        if i % 3 == 0:
            kills.append(dict(at_seconds=rng.uniform(0.0, 1.0)))  # scaled to the run's length below
        else:
            kills.append(dict(at_rename=rng.randint(1, 10 ** 6), phase=rng.choice(["before", "after"])))
    return kills


def run_plan(reference, n, seed):
    for i, kill in enumerate(plan(n, seed)):
        if "at_seconds" in kill:
            kill = dict(at_seconds=kill["at_seconds"] * reference["seconds"])
        else:
            kill = dict(at_rename=1 + kill["at_rename"] % reference["renames"], phase=kill["phase"])
        kill_and_resume(reference, f"run{seed}-{i}", **kill)


def test_kill_at_random_moments_then_resume_gives_the_same_run(reference):
    run_plan(reference, 6, seed=0)


@pytest.mark.slow
def test_twenty_kills_then_resume_give_the_same_run(reference):
    run_plan(reference, 20, seed=1)


def test_a_run_killed_in_its_first_epoch_resumes(reference):
    kill_and_resume(reference, "first-epoch", at_rename=2, phase="before")  # config written, nothing else


def test_temporary_files_of_a_crash_are_removed_when_the_run_is_taken_back(reference):
    run = reference["root"] / "temps"
    proc = launch(train_args(reference["data"], run), {"KILL_AT_REPLACE": "3", "KILL_PHASE": "before"})
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, f"the run was not killed at its third rename: {err}"
    assert len(leftovers(run)) == 1  # the write that was cut short
    finish(reference["data"], run)
    assert leftovers(run) == []
