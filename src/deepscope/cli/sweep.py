"""``deepscope sweep [OPTIONS] -- COMMAND [OPTIONS]``: many runs of a training command side by side, on Ray."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io as _stdio
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

from .. import figures, files, sweep
from ..book import ch5, ch6
from ..data import load_mnist
from ..errors import ConfigError
from ..runs import Run, reserve
from .options import nonnegative_int, positive_int

EPILOG = """examples:
  deepscope sweep --grid eta=0.01,0.03,0.1 --seeds 3 -- train --epochs 2
  deepscope sweep --sample 20 --space eta=0.001:0.3:log --scheduler asha -- train --epochs 10
  deepscope sweep --seeds 5 --grid depths=2,3,4 --grid activations=sigmoid,relu -- scope compare --steps 2000
  deepscope sweep --address 127.0.0.1:6379 --grid eta=0.03,0.1 -- train       (a running Ray cluster)
  deepscope sweep --resume runs/sweep-20261127-110000                          (only what is missing)

Each trial is COMMAND with its options, the trial's --KEY VALUE, --seed S and --out SWEEP/TRIAL: an ordinary
run folder. The sweep folder holds trials.csv / trials.json (options, seed, status, best-validation epoch,
accuracies, seconds, Ray node) and sweep.png (the metric against the first swept option, one panel per value
of the second, mean and band min-max over seeds). Without --address, Ray starts inside this process: one trial
per core, one BLAS thread each.
"""


def _main():
    """``deepscope``'s entry point: each trial runs its command through it (sent to the workers by reference)."""
    from .main import main   # lazy: cli/main.py imports this module to register the command
    return main


def _parser():
    from .main import build_parser   # lazy: as above
    return build_parser()


def register(sub) -> None:
    p = sub.add_parser("sweep", help="many runs of a training command side by side on Ray (grid, random search, seeds)",
                       description="Run a deepscope training command many times on Ray: over a grid of "
                                   "options, random samples of a space, and seeds.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--address", default=None, help="join a running Ray cluster (default: start Ray in this process)")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="trials at a time (default: one per CPU; 1: one after another in this process, without Ray)")
    p.add_argument("--seeds", type=positive_int, default=1, help="seeds per configuration: 0 … K-1 (default 1)")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="an option of COMMAND and its values (repeatable: the trials take every combination)")
    p.add_argument("--sample", type=positive_int, default=0, metavar="N", help="N random points of the --space")
    p.add_argument("--space", action="append", default=[], metavar="KEY=LOW:HIGH[:log]",
                   help="a range to sample an option from, uniformly or log-uniformly (repeatable)")
    p.add_argument("--scheduler", choices=["asha"], default=None,
                   help="asha: stop trials early whose validation accuracy trails (Ray Tune's ASHA)")
    p.add_argument("--metric", default=None, help="the number to plot (default: test_acc, else val_acc)")
    p.add_argument("--max-failures", type=nonnegative_int, default=3,
                   help="restarts of a trial whose worker died; it continues from its checkpoint (default 3)")
    p.add_argument("--out", default=None, help="sweep folder (default runs/sweep-<date>-<time>)")
    p.add_argument("--resume", metavar="DIR", default=None, help="run the trials of sweep DIR that have no result")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND [OPTIONS]",
                   help="the training command and its options, after --")
    p.set_defaults(func=cmd_sweep)


def add_parallel_options(p, seeds_help: str | None = None) -> None:
    """--seeds (when ``seeds_help`` says what it does), --workers and --address: a command whose runs become
    trials of a sweep on Ray."""
    if seeds_help:
        p.add_argument("--seeds", type=positive_int, default=1, metavar="K", help=f"run over K {seeds_help}")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="trials at a time (default: one per CPU; 1: one after another in this process, without Ray)")
    p.add_argument("--address", default=None, help="a running Ray cluster (default: Ray inside this process)")


def say_where(address=None, workers=None, scheduler=None) -> None:
    """One line when the trials will run one after another in this process rather than on Ray."""
    if not sweep.in_process(address, workers, scheduler):
        sweep.require_ray()          # --address or --scheduler without Ray: how to get it, in one line
    elif not sweep.ray_available():
        print(f"the trials run one after another in this process: Ray is not installed ({sweep.INSTALL_HINT})")
    elif workers == 1:
        print("--workers 1: the trials run one after another in this process, without Ray")


def _validate(command: list[str], trials: list[sweep.Trial]) -> None:
    """Every trial's command line must parse, so that a typo stops the sweep before Ray starts."""
    if not command:
        raise ConfigError("name the command to sweep after --, e.g. deepscope sweep --seeds 3 -- train --epochs 2")
    owned = sorted({a.split("=")[0] for a in command if a.split("=")[0] in ("--out", "--resume", "--seed")})
    if owned:
        raise ConfigError(f"the sweep sets {', '.join(owned)} of each trial; remove it from the command "
                          f"(--seeds K gives seeds 0 … K-1)")
    parser = _parser()
    for trial in trials:
        argv = sweep.trial_argv(command, trial, "SWEEP/TRIAL", resume=False)
        said = _stdio.StringIO()
        try:
            with contextlib.redirect_stderr(said):
                args = parser.parse_args(argv)
        except SystemExit:
            why = said.getvalue().strip().splitlines()[-1:] or ["?"]
            why = re.sub(r"^[\w -]*: error: ", "", why[0]).split(" (see ")[0]
            raise ConfigError(f"deepscope {' '.join(argv)}: {why}") from None
        if getattr(args, "func", None) is None:
            raise ConfigError(f"deepscope {' '.join(command)} is not a command that trains")


def cmd_sweep(args) -> int:
    if not sweep.in_process(args.address, args.workers, args.scheduler):
        sweep.require_ray()          # before anything else: --address or --scheduler need Ray
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.resume is not None:
        if command or args.grid or args.space or args.sample or args.seeds != 1 or args.out:
            raise ConfigError("--resume DIR runs the trials DIR's sweep.json lists: give no command, "
                              "--grid, --space, --sample, --seeds or --out with it")
        folder = sweep.SweepFolder.open(args.resume)
    else:
        trials = sweep.expand([sweep.parse_grid(g) for g in args.grid], seeds=args.seeds, samples=args.sample,
                              space=[sweep.parse_space(s) for s in args.space])
        _validate(command, trials)
        out = args.out or reserve(Path("runs") / f"sweep-{time.strftime('%Y%m%d-%H%M%S')}")
        folder = sweep.SweepFolder.create(out, command, trials)
    return launch(folder, address=args.address, workers=args.workers, scheduler=args.scheduler,
                  max_failures=args.max_failures, metrics=[args.metric] if args.metric else None,
                  progress=not args.quiet)


def launch(folder: sweep.SweepFolder, *, address=None, workers=None, scheduler=None, max_failures: int = 3,
           metrics=None, progress: bool = True) -> int:
    """Run a sweep's missing trials, print the mean ± std of ``metrics`` over seeds, draw the figure of the
    first; the exit status (130 when interrupted, 1 when a trial failed)."""
    todo = folder.missing()
    print(f"deepscope sweep: {len(todo)} of {len(folder.trials)} trials to run of deepscope "
          f"{' '.join(folder.command)}; sweep folder {folder.path}")
    say_where(address, workers, scheduler)
    result = sweep.run(folder, _main(), address=address, workers=workers, scheduler=scheduler,
                       max_failures=max_failures, progress=progress)
    rows = result.rows
    metrics = metrics or ["test_acc" if any("test_acc" in r for r in rows) else "val_acc"]
    for metric in metrics:
        for line in sweep.format_summary(rows, folder.keys, metric):
            print(line)
    figure = sweep.write_figure(folder, metrics[0])
    print(f"trials: {folder.path / 'trials.csv'}" + (f"; figure: {figure}" if figure else "")
          + f"; {len(rows)} of {len(folder.trials)} trials have results ({result.seconds:.0f} s)")
    failed = [r for r in rows if r["status"] in ("failed", "error")]
    if failed:
        print(f"deepscope sweep: {len(failed)} trial(s) failed: {', '.join(r['trial'] for r in failed[:5])}"
              f"{' …' if len(failed) > 5 else ''} (their logs: {folder.path / 'logs'})", file=sys.stderr)
    if result.interrupted:
        print(f"deepscope sweep: interrupted; continue with: deepscope sweep --resume {folder.path}",
              file=sys.stderr)
        return 130
    return 1 if failed else 0


def ensemble(rung: ch6.Rung, *, epochs=None, runs=None, train_size=None, data_dir=None, seed=0, out=None,
             address=None, workers=None, progress=True, device="cpu") -> dict:
    """Chapter 6's ensemble as a sweep: the nets of ``rung`` (``ch6.get_rung("ensemble", ...)``) trained as
    parallel trials of ``deepscope train`` (seeds ``seed`` …) on ``device``, then the plurality vote of their
    models (the best-validation weights) on the test set."""
    epochs = epochs or rung.epochs
    # train's --lmbda is network2's λ (decay ηλ/n per step); the rung's is network3's (ηλ/(n/m)): λ·m is the same
    command = ["train", "--arch", rung.arch, "--epochs", str(epochs), "-m", str(rung.mini_batch_size),
               "--lr", str(rung.eta), "--lmbda", str(rung.lmbda * rung.mini_batch_size),
               "--momentum", str(rung.momentum), "--init", rung.init, "--schedule", "none", "--quiet"]
    command += ["--expand"] if rung.expanded else []
    command += ["--device", device] if device != "cpu" else []
    command += ["--train-size", str(train_size)] if train_size else []
    command += ["--data-dir", str(Path(data_dir).resolve())] if data_dir else []
    out = out or reserve(Path("runs") / f"book-ch6-ensemble-{time.strftime('%Y%m%d-%H%M%S')}")
    folder = sweep.SweepFolder.create(out, command,
                                      sweep.expand(seeds=runs or rung.runs, first_seed=seed))
    print(f"ch6 ensemble: {len(folder.trials)} nets as trials of deepscope {' '.join(command)}; "
          f"sweep folder {folder.path}")
    say_where(address, workers)
    result = sweep.run(folder, _main(), address=address, workers=workers, progress=progress)
    done = [folder.run_dir(t) for t in folder.trials if folder.rows.get(t.name, {}).get("status") == "done"]
    if result.interrupted or len(done) < len(folder.trials):
        raise ConfigError(f"only {len(done)} of {len(folder.trials)} nets trained; finish them with "
                          f"deepscope sweep --resume {folder.path}, then vote again")
    X, y = load_mnist(data_dir=data_dir, verbose=False).test
    predictions = [ch6._predict(Run.open(d).load_model(), X) for d in done]
    votes = ch6.ensemble_predict(predictions)
    summary = {"book": rung.book, "settings": dataclasses.replace(rung, epochs=epochs).settings(),
               "changed": ch6.changed_settings(rung), "vote": 100.0 * float((votes == y).mean()),
               "members": [100.0 * float((p == y).mean()) for p in predictions],
               "sweep": str(folder.path), "command": command, "seconds": result.seconds}
    files.write_json(folder.path / "vote.json", summary)
    return summary


def compare(depths, activations, inits, *, seeds: int, seed: int = 0, steps: int, lr: float, train_size: int,
            n_val: int, data_dir=None, out=None, address=None, workers=None, progress: bool = True,
            norms=("none",), residuals=("no",)) -> dict:
    """``scope compare`` over ``seeds`` seeds as a sweep: one trial per depth and seed (its activation × init ×
    norm × residual cells), then each cell's speed ratio and accuracy as mean ± std and min–max over the seeds."""
    command = ["scope", "compare", "--activations", ",".join(activations), "--inits", ",".join(inits),
               "--norms", ",".join(norms), "--residual", ",".join(residuals),
               "--steps", str(steps), "--lr", str(lr), "--train-size", str(train_size), "--n-val", str(n_val),
               "--quiet"] + (["--data-dir", str(Path(data_dir).resolve())] if data_dir else [])
    out = out or reserve(Path("runs") / f"scope-compare-{time.strftime('%Y%m%d-%H%M%S')}")
    folder = sweep.SweepFolder.create(out, command, sweep.expand([("depths", [str(d) for d in depths])],
                                                                  seeds=seeds, first_seed=seed))
    print(f"compare: depths {list(depths)} × {list(activations)} × {list(inits)} × norms {list(norms)} × residual "
          f"{list(residuals)} over seeds {seed}…{seed + seeds - 1}:"
          f" {len(folder.trials)} trials of deepscope {' '.join(command)}; sweep folder {folder.path}")
    say_where(address, workers)
    # the deepest nets take longest: started first, so that the last trials to end are short ones
    result = sweep.run(folder, _main(), address=address, workers=workers, progress=progress,
                       longest_first=lambda t: int(t.options["depths"]))
    cells = [{"norm": "none", "residual": "no", **c} for c in sweep.records(folder)]   # runs from before the axes
    keys = ["depth", "activation", "init", "norm", "residual"]
    accuracy = {tuple(s[k] for k in keys): s for s in sweep.summarize(cells, keys, "val_acc")}
    ratio = {tuple(s[k] for k in keys): s for s in sweep.summarize(cells, keys, "ratio")}
    trained = {tuple(s[k] for k in keys): s for s in sweep.summarize(cells, keys, "ratio_trained")}
    lines = [f"{'depth':>5} {'activation':10} {'init':6} {'norm':5} {'res':3} {'last/first speed, init':>22} "
             f"{'trained':>22} {'accuracy (mean ± std, n)':>28}"]
    for key, r in ratio.items():
        a, t = accuracy.get(key), trained.get(key)
        acc = f"{a['mean']:.2%} ± {a['std']:.2%} (n={a['n']})" if a else "diverged"
        after = f"{t['mean']:>12.3g} ± {t['std']:<8.2g}" if t else f"{'–':>22}"
        lines.append(f"{key[0]:>5} {key[1]:10} {key[2]:6} {key[3]:5} {key[4]:3} {r['mean']:>12.3g} ± "
                     f"{r['std']:<8.2g} {after} {acc:>28}")
    files.atomic_write(folder.path / "compare.md", "\n".join(lines) + "\n")
    figure = figures.plot_sweep(list(accuracy.values()), keys, "val_acc", folder.path / "compare.png") \
        if accuracy else None
    return {"table": "\n".join(lines), "figure": figure, "sweep": folder.path, "seconds": result.seconds,
            "interrupted": result.interrupted, "missing": len(folder.missing())}


def speed(layers, activation: str, init: str, *, seeds: int, seed: int = 0, steps: int, lr: float, lmbda: float,
          train_size: int, data_dir=None, out=None, address=None, workers=None, progress: bool = True) -> dict:
    """``scope speed`` over ``seeds`` seeds as a sweep: one trial per seed, then the speeds of every trial
    together, shaped as :func:`deepscope.book.ch5.speed_experiment` returns them, with the figure over seeds
    (mean and band min-max) and ``summary.json`` in the sweep folder."""
    command = ["scope", "speed", "--layers", ",".join(str(n) for n in layers), "--activation", activation,
               "--init", init, "--steps", str(steps), "--lr", str(lr), "--lmbda", str(lmbda),
               "--train-size", str(train_size), "--quiet"] + (["--data-dir", str(Path(data_dir).resolve())]
                                                              if data_dir else [])
    out = out or reserve(Path("runs") / f"scope-speed-{time.strftime('%Y%m%d-%H%M%S')}")
    folder = sweep.SweepFolder.create(out, command, sweep.expand(seeds=seeds, first_seed=seed))
    print(f"speed: {len(folder.trials)} trials (seeds {seed}…{seed + seeds - 1}) of deepscope {' '.join(command)}; "
          f"sweep folder {folder.path}")
    say_where(address, workers)
    result = sweep.run(folder, _main(), address=address, workers=workers, progress=progress)
    hidden = len(layers) - 2
    done = [t for t in folder.trials if folder.rows.get(t.name, {}).get("status") == "done"]
    speeds, accuracy = [], []
    for t in done:
        records = [json.loads(line) for line in (folder.run_dir(t) / "speed.jsonl").read_text().splitlines()]
        speeds.append([[r["layers"][k]["bias_grad"] for k in sorted(r["layers"], key=int)][:hidden]
                       for r in sorted(records, key=lambda r: r["step"])])
        accuracy.append(json.loads((folder.run_dir(t) / "summary.json").read_text())["final_accuracy_mean"])
    r = {"layers": list(layers), "activation": activation, "init": init, "steps": steps, "eta": lr, "lmbda": lmbda,
         "n": train_size, "seeds": [t.seed for t in done], "speeds": np.array(speeds).reshape(len(done), steps, hidden),
         "final_accuracy": accuracy, "sweep": folder.path, "seconds": result.seconds,
         "interrupted": result.interrupted, "missing": len(folder.missing())}
    r["init_speeds"] = r["speeds"][:, 0, :]
    if done:
        r["figure"] = str(figures.plot_speed(
            np.arange(steps), r["speeds"], [f"Hidden layer {j + 1}" for j in range(hidden)], folder.path / "speed.png",
            title=f"Speed of learning: {hidden} hidden layer{'s' if hidden > 1 else ''}",
            xlabel="Number of full-batch steps of training"))
        files.write_json(folder.path / "summary.json", ch5.summarize(r))
    return r
