"""``deepscope scope {speed,chain,compare,time}``: the instruments from the shell."""
from __future__ import annotations

import argparse
import dataclasses
import sys

from ..book.ch5 import (chain_gradient, exploding_chain, format_chain, random_chain, run_compare, speed_experiment,
                        summarize, table)
from ..book.ch5.compare import NORMS, RESIDUALS, check_grid
from ..errors import DeepscopeError
from ..data import load_mnist
from ..runs import History, Run
from ..sequence import time_grad
from . import options
from . import sweep as sweeps
from .options import nonnegative_float, nonnegative_int, positive_int

EPILOG = """examples:
  deepscope scope speed --layers 784,30,30,30,30,10          the book's "Speed of learning" figure
  deepscope scope speed --layers 784,30,30,10 --seeds 10 --steps 0   speeds at initialisation, 10 seeds
  deepscope scope chain --depth 4 --exploding                 one neuron per layer: ×25 per layer
  deepscope scope compare --depths 4 --steps 1000             sigmoid/tanh/relu × large/book/he
  deepscope scope compare --depths 5,20,50 --activations sigmoid,relu --inits he --norms none,batch --residual no,yes
                                                              the cures: batch norm and residual connections
  deepscope scope time --train-steps 500                      ‖∂C/∂h_(T-k)‖ against k: RNN, LSTM, GRU
"""


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise DeepscopeError(f"{what}: expected comma-separated numbers, got {text!r}") from None


def _names(text: str, allowed, what: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise DeepscopeError(f"{what}: unknown {bad or text!r}; choose from {', '.join(allowed)}")
    return names


def register(sub) -> None:
    p = sub.add_parser("scope", help="instruments: learning speed per layer, the gradient chain, comparisons",
                       description="Instruments that show why deep nets are hard to train (Nielsen, ch. 5).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ss = p.add_subparsers(dest="scope_command", metavar="INSTRUMENT")

    s = ss.add_parser("speed", help="the book's speed-of-learning experiment (‖∂C/∂b‖ per hidden layer)",
                      description="Full-batch gradient descent on the first 1,000 MNIST training images "
                                  "(cross-entropy cost, sigmoid outputs, network2's L2), recording "
                                  "‖∂C/∂b^l‖ for every hidden layer before every step.")
    s.add_argument("--layers", default="784,30,30,30,30,10", help="layer sizes (default: 784,30,30,30,30,10)")
    s.add_argument("--activation", default="sigmoid", choices=["sigmoid", "tanh", "relu"])
    s.add_argument("--init", default="book", choices=["book", "large", "xavier", "he"])
    s.add_argument("--steps", type=nonnegative_int, default=500,
                   help="full-batch steps (default 500; 0: only the speeds at init)")
    options.learning_rate(s, 0.1)
    s.add_argument("--lmbda", type=nonnegative_float, default=5.0, help="L2 regularisation λ (network2's; default 5.0)")
    options.experiment(s, "scope-speed", train_size=1000)
    sweeps.add_parallel_options(s, "initialisations, seeds --seed … --seed+K-1 (default 1): with --steps, one "
                                   "trial per seed; the figure gives the mean and the band min-max over them")
    s.set_defaults(func=cmd_speed)

    c = ss.add_parser("chain", help="one sigmoid neuron per layer: ∂C/∂b_1 as a product of factors",
                      description="The book's chain: z_j = w_j a_(j-1) + b_j, a_j = σ(z_j), quadratic cost "
                                  "C = ½(a_L - y)² (or --cost crossentropy). Prints every factor of "
                                  "∂C/∂b_1 = σ′(z_1) Π_(j≥2) w_j σ′(z_j) ∂C/∂a_L beside backprop's value.")
    c.add_argument("--depth", type=positive_int, default=4)
    c.add_argument("--exploding", action="store_true", help="w_j = 100, biases making every z_j = 0")
    c.add_argument("--weights", default=None, help="w_1,…,w_L (default: random, N(0,1))")
    c.add_argument("--biases", default=None, help="b_1,…,b_L (default: random, N(0,1))")
    c.add_argument("--x", type=float, default=1.0, help="the input (default 1)")
    c.add_argument("--y", type=float, default=0.0, help="the target (default 0)")
    c.add_argument("--cost", default="quadratic", choices=["quadratic", "crossentropy"])
    c.add_argument("--seed", type=options.seed_int, default=0)
    c.set_defaults(func=cmd_chain)

    m = ss.add_parser("compare", help="a grid of depth × activation × init × norm × residual: speed ratio and "
                                      "accuracy",
                      description="For every cell: the last/first hidden-layer speed ratio at initialisation and "
                                  "after a short mini-batch SGD training, and the validation accuracy. Nets of "
                                  "--depths hidden layers of 30 neurons; --norms batch puts batch norm after "
                                  "every hidden Linear (784-30bn*D-10); --residual yes turns the hidden layers "
                                  "after the first into two-layer residual blocks (784-30-res30*B-10).")
    m.add_argument("--depths", default="2,3,4,5,6", help="numbers of hidden layers (default 2,3,4,5,6; e.g. 5,20,50)")
    m.add_argument("--activations", default="sigmoid,tanh,relu")
    m.add_argument("--inits", default="large,book,he")
    m.add_argument("--norms", default="none", help=f"normalisation, from {', '.join(NORMS)} (default none)")
    m.add_argument("--residual", default="no", help=f"residual connections, from {', '.join(RESIDUALS)} "
                                                    "(default no)")
    m.add_argument("--steps", type=nonnegative_int, default=1000, help="SGD steps per cell (mini-batch 10; default 1000)")
    options.learning_rate(m, 0.1)
    m.add_argument("--n-val", type=positive_int, default=1000, help="validation images (default 1000)")
    options.experiment(m, "scope-compare", train_size=5000)
    sweeps.add_parallel_options(m, "seeds --seed … --seed+K-1, one trial per depth and seed; the table gives "
                                   "each cell's mean ± std over them")
    m.set_defaults(func=cmd_compare)

    t = ss.add_parser("time", help="‖∂C/∂h_(T-k)‖ against k for RNN, LSTM and GRU on row-MNIST, fresh and trained",
                      description=time_grad.__doc__.split("\n\n")[0])
    t.add_argument("--cells", default="rnn,lstm,gru", help="comma-separated, from rnn, lstm, gru (default: all)")
    t.add_argument("--hidden", type=positive_int, default=128, help="hidden units (default 128)")
    t.add_argument("--batch-size", "-m", "--batch", dest="batch_size", type=positive_int, default=64, metavar="M",
                   help="sequences per batch (default: %(default)s)")
    t.add_argument("--train-steps", type=nonnegative_int, default=500,
                   help="Adam steps on row-MNIST before the second measurement (default: %(default)s)")
    t.add_argument("--lr", "--eta", dest="lr", type=options.positive_float, default=2e-3, metavar="η",
                   help="Adam's learning rate (default: %(default)s)")
    options.data(t, dataset=False)
    options.experiment(t, "scope-time")
    t.set_defaults(func=cmd_time)

    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _run(args, prefix: str, config: dict) -> Run:
    """The run folder of an experiment, holding its options."""
    run = Run.create(args.out, prefix)
    run.write_config({**config, "seed": args.seed}, f"deepscope scope {prefix.split('-', 1)[1]}")
    return run


def cmd_speed(args) -> int:
    layers = options.ints(args.layers, "--layers")
    if len(layers) < 3:
        raise DeepscopeError(f"--layers: need an input, at least one hidden layer and an output, got {args.layers}")
    hidden = len(layers) - 2
    print(f"speed of learning: {layers}, {args.activation} neurons, init {args.init}, {args.steps} full-batch steps "
          f"(η={args.lr}, λ={args.lmbda}, n={args.train_size}), {args.seeds} seed(s)")
    if args.seeds > 1 and args.steps:     # one trial per seed, side by side (Ray) or one after another
        r = sweeps.speed(layers, args.activation, args.init, seeds=args.seeds, seed=args.seed, steps=args.steps,
                         lr=args.lr, lmbda=args.lmbda, train_size=args.train_size, data_dir=args.data_dir,
                         out=args.out, address=args.address, workers=args.workers, progress=not args.quiet)
        if r["interrupted"] or r["missing"]:
            print(f"deepscope scope speed: {r['missing']} trial(s) without a result; finish them with: "
                  f"deepscope sweep --resume {r['sweep']}", file=sys.stderr)
            return 130 if r["interrupted"] else 1
        out, records = r["sweep"], f"{r['sweep']}/seed-*/speed.jsonl"
    else:
        config = {"layers": layers, "activation": args.activation, "init": args.init, "steps": args.steps,
                  "seeds": args.seeds, "lr": args.lr, "lmbda": args.lmbda, "train_size": args.train_size,
                  "data_dir": args.data_dir}
        run = _run(args, "scope-speed", config) if args.steps else None   # --steps 0 only prints, saves nothing
        out = run.path if run else None
        r = speed_experiment(layers, args.activation, args.init, steps=args.steps, seeds=args.seeds, seed=args.seed,
                             eta=args.lr, lmbda=args.lmbda, n_train=args.train_size, out=out,
                             progress=not args.quiet, data_dir=args.data_dir)
        records = out / "speed.jsonl" if out else None
    s = summarize(r)
    print("‖∂C/∂b^l‖ at initialisation, hidden layers 1.." + str(hidden) +
          (f" (mean ± std over {args.seeds} seeds):" if args.seeds > 1 else ":"))
    for j in range(hidden):
        spread = f" ± {s['init_speed_std'][j]:.3g}  [{s['init_speed_min'][j]:.3g}, {s['init_speed_max'][j]:.3g}]" \
            if args.seeds > 1 else ""
        print(f"  hidden layer {j + 1}: {s['init_speed_mean'][j]:.4g}{spread}")
    print(f"ratio last hidden / first hidden at init: {s['ratio_last_first_mean']:.3g}"
          + (f" ± {s['ratio_last_first_std']:.3g}" if args.seeds > 1 else ""))
    if args.steps:
        print(f"after {args.steps - 1} updates (the last record): "
              + "/".join(f"{v:.3g}" for v in s["final_speed_mean"])
              + f"; training accuracy {s['final_accuracy_mean']:.2%}")
        print(f"figure: {r['figure']}; records: {records}")
    return 0


def cmd_chain(args) -> int:
    if args.exploding:
        weights, biases = exploding_chain(args.depth, x=args.x)
    else:
        weights, biases = random_chain(args.depth, args.seed)
    if args.weights is not None:
        weights = _floats(args.weights, "--weights")
    if args.biases is not None:
        biases = _floats(args.biases, "--biases")
    if len(weights) != len(biases):
        raise DeepscopeError(f"{len(weights)} weights but {len(biases)} biases: give one of each per layer")
    r = chain_gradient(weights, biases, x=args.x, y=args.y, cost=args.cost)
    print(f"one sigmoid neuron per layer, {len(weights)} layers, x = {args.x}, y = {args.y}")
    print(format_chain(r))
    return 0


def cmd_compare(args) -> int:
    depths = options.ints(args.depths, "--depths")
    acts = _names(args.activations, ["sigmoid", "tanh", "relu"], "--activations")
    inits = _names(args.inits, ["large", "book", "xavier", "he"], "--inits")
    norms = _names(args.norms, NORMS, "--norms")
    residuals = _names(args.residual, RESIDUALS, "--residual")
    check_grid(depths, acts, norms, residuals, args.train_size)
    if args.seeds > 1:
        r = sweeps.compare(depths, acts, inits, norms=norms, residuals=residuals, seeds=args.seeds, seed=args.seed, steps=args.steps, lr=args.lr,
                           train_size=args.train_size, n_val=args.n_val, data_dir=args.data_dir, out=args.out,
                           address=args.address, workers=args.workers, progress=not args.quiet)
        print(r["table"])
        print(f"table: {r['sweep'] / 'compare.md'}; figure: {r['figure']}; trials: {r['sweep'] / 'trials.csv'} "
              f"({r['seconds']:.0f} s)")
        if r["interrupted"] or r["missing"]:
            print(f"deepscope scope compare: {r['missing']} trial(s) without a result; finish them with: "
                  f"deepscope sweep --resume {r['sweep']}", file=sys.stderr)
            return 130 if r["interrupted"] else 1
        return 0
    run = _run(args, "scope-compare", {"depths": depths, "activations": acts, "inits": inits, "norms": norms,
                                       "residuals": residuals, "steps": args.steps, "lr": args.lr,
                                       "train_size": args.train_size, "n_val": args.n_val, "data_dir": args.data_dir})
    out = run.path
    print(f"compare: depths {depths} × {acts} × {inits} × norms {norms} × residual {residuals}; {args.steps} SGD "
          f"steps (batch 10, η={args.lr}) on {args.train_size} images, accuracy on {args.n_val} validation images")
    with run:
        cells = run_compare(depths, acts, inits, steps=args.steps, eta=args.lr, n_train=args.train_size,
                            n_val=args.n_val, seed=args.seed, out=out, progress=not args.quiet,
                            data_dir=args.data_dir, norms=norms, residuals=residuals)
        # one metrics record per cell, numbered like epochs (val_acc: its validation accuracy), so that a sweep
        # reads the cells of its trials like the epochs of any run
        run.write_metrics(History([{"epoch": i + 1, "depth": c["depth"], "activation": c["activation"],
                                    "init": c["init"], "norm": c["norm"], "residual": c["residual"],
                                    "ratio": c["ratio"], "ratio_trained": c["ratio_trained"],
                                    "diverged": c["diverged"],
                                    "val_acc": None if c["diverged"] else c["accuracy"]}
                                   for i, c in enumerate(cells)]))
    print(table(cells, inits))
    print(f"table: {out / 'compare.md'}; figure: {out / 'compare.png'}")
    return 0


def cmd_time(args) -> int:
    cells = _names(args.cells, list(time_grad.NETS), "--cells")
    data = load_mnist("mnist", data_dir=args.data_dir)
    if args.train_size:
        data = dataclasses.replace(data, train=(data.train[0][:args.train_size], data.train[1][:args.train_size]))
    run = _run(args, "scope-time", {"cells": cells, "hidden": args.hidden, "batch_size": args.batch_size,
                                    "train_steps": args.train_steps, "lr": args.lr, "data_dir": args.data_dir})
    with run:
        time_grad.run_time(data, cells, hidden=args.hidden, batch=args.batch_size, train_steps=args.train_steps,
                           lr=args.lr, seed=args.seed, out=run.path, progress=not args.quiet)
    return 0
