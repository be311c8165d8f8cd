"""Training throughput of ktg on one device: the fast path against the public code's settings, several trials
sharing the device, and the wall-clock the papers' search (docs/method.md#search) would take on it.

Everything runs ktg's own training step (:func:`ktg.train.make_train_step`) on batches cut and augmented by
:class:`~ktg.data.loader.BatchLoader` from synthetic uint8 images resident on the device (the reference recipe's
transform, docs/method.md#reference-protocol: RandomResizedCrop(ratio 1-1.3) + flip). Three graphs of N ABN nodes:

- ``independent``: label edges only;
- ``heavy``: every network edge ``prob_kl+att_mse`` with gate ``through`` (the most work a graph can ask for);
- ``random``: trial 0 of a search with ``--graph-seed``, drawn from the papers' space (docs/method.md#search) as
  ``ktg search`` draws it.

Two modes (``--modes``; add ``compiled`` or ``cudagraphs`` to measure ``--compile``):

- ``reference``: how the public code runs: fp32, NCHW, eager, deterministic kernels, SGD's per-tensor loop;
- ``fast``: ktg's default on the device (on CUDA: bf16 autocast, channels-last, fused SGD, cuDNN autotuning;
  on CPU: fp32, foreach SGD);
- ``compiled``: ``fast`` plus ``torch.compile`` (inductor) of the nodes;
- ``cudagraphs``: ``compiled`` in mode ``reduce-overhead``: the nodes' forward and backward replayed as CUDA
  graphs (``--compile --compile-mode reduce-overhead``; on a CPU the same as ``compiled``).

Step times are medians over ``--repeats`` runs of ``--steps`` steps, after ``--warmup`` steps, with the device
synchronised around each run; node-images/s = batch × nodes / step time. ops/step counts the operators one
eager step dispatches (views excluded): about one kernel launch each, so it shows on any device what a step
costs where launches dominate, as on a GPU at batch 16. Concurrent trials are K processes
(``--jobs``) each training the random graph in fast mode at ``--jobs-batch-size`` for ``--seconds``, started
together; their node-images/s add up. By default they take turns on a GPU; ``--mps`` measures them once more
side by side through CUDA MPS (as ``ktg search --mps``); where MPS cannot start, its rows say why and the other
numbers stand. One process at ``--big-batch-size`` is the yardstick. On CUDA every row also records the trial's
peak GPU memory. ``--steps-only`` times the steps alone (``experiments/gpu_check.py`` times the compiled modes so).

The projection multiplies the measured costs by the search's size: ``--trials`` trials, each training on
``--train-images`` and evaluating on ``--val-images`` per epoch (Stanford Dogs' 50/50 search split) for the
expected number of epochs under successive halving (see :func:`expected_epochs`), training at the
recommended concurrent rate (within 5 % of the best) and evaluating at the single-process rate (conservative:
evaluation is not overlapped).

Examples::

    python experiments/benchmark.py --json benchmark.json              # the full run (a GPU: ~10 minutes)
    python experiments/benchmark.py --mps --json benchmark.json        # and concurrent trials through MPS
    python experiments/benchmark.py --device cpu --quick --json b.json  # tiny models, any machine, < 1 minute
"""

from __future__ import annotations

import argparse
import itertools
import math
import multiprocessing
import os
import queue
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import torch

from ktg.config import TrainConfig
from ktg.data import ImageSet
from ktg.data.loader import BatchLoader
from ktg.data.synthetic import make_images
from ktg.data.transforms import reference_transforms
from ktg.engine import KnowledgeTransferGraph, build_graph
from ktg.errors import KTGError
from ktg.graph import EdgeSpec, GraphSpec, NodeSpec, independent
from ktg.io import write_json
from ktg.optim import make_optimizer
from ktg.profiling import CountOperators
from ktg.registry import DEFAULT_TRIAL_LENGTH
from ktg.runtime import compile_options, configure_kernels, resolve_device
from ktg.runtime.mps import mps_daemon, running_daemon
from ktg.search.pruners import rungs as successive_halving_rungs
from ktg.search.rescore import MIN_SEEDS
from ktg.search.settings import (
    DEFAULT_BASELINES,
    DEFAULT_RESCORE_SEEDS,
    DEFAULT_RESCORE_TOP,
    default_first_rung,
    trial_training,
)
from ktg.train import TrainStep, make_train_step, predict

GRAPHS = ("independent", "heavy", "random")
#: Each mode's TrainConfig, and whether its SGD loops over tensors one by one (the public code's torch 1.x).
MODES: dict[str, tuple[TrainConfig, bool]] = {
    "reference": (TrainConfig(amp=False, channels_last=False, deterministic=True), True),
    "fast": (TrainConfig(), False),
    "compiled": (TrainConfig(compile=True), False),
    "cudagraphs": (TrainConfig(compile=True, compile_mode="reduce-overhead"), False),
}
#: Larger than any iteration a benchmark reaches: the ``linear`` gate's k/K stays in (0, 1].
TOTAL_ITERATIONS = 10**9
HOURS_TARGET = 24.0


@dataclass(frozen=True)
class Case:
    """One configuration to measure; picklable, so a worker process rebuilds the same trial from it."""

    graph: str
    mode: str
    batch_size: int
    device: str
    model: str | None
    width: int | None
    image_size: int
    nodes: int
    classes: int
    graph_seed: int
    images: int


# -- the graphs ----------------------------------------------------------------------------------------


def heavy(num_nodes: int) -> GraphSpec:
    """Every ordered pair taught with ``prob_kl+att_mse`` under ``through``: the most work per step."""
    edges = tuple(EdgeSpec(s, t, "prob_kl+att_mse", "through")
                  for t in range(num_nodes) for s in range(num_nodes) if s != t)
    return GraphSpec((NodeSpec(),) * num_nodes, ("through",) * num_nodes, edges, name="heavy")


def random_graph(num_nodes: int, seed: int) -> GraphSpec:
    """Trial 0 of a ``ktg search --seed seed``: a graph drawn uniformly from the papers' search space."""
    import optuna

    from ktg.search.sampler import TrialSeededSampler
    from ktg.search.space import SearchSpace

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=TrialSeededSampler(seed))
    return SearchSpace(num_nodes).suggest(study.ask())


def benchmark_graph(case: Case) -> GraphSpec:
    """The graph ``case.graph`` with every node's model filled in for the image size."""
    spec = {"independent": lambda: independent(case.nodes), "heavy": lambda: heavy(case.nodes),
            "random": lambda: random_graph(case.nodes, case.graph_seed)}[case.graph]()
    options = {} if case.width is None else {"base_width": case.width}
    return spec.with_given(case.model, options).resolved(case.image_size)


# -- one trial -----------------------------------------------------------------------------------------


def synthetic_images(case: Case, device: torch.device) -> ImageSet:
    """``case.images`` uint8 images on ``device``: the data every loader of this process cuts batches from."""
    pixels, labels = make_images(case.images, case.classes, case.image_size, seed=0)
    classes = [f"class_{c}" for c in range(case.classes)]
    return ImageSet(pixels.to(device), labels.to(device), classes, "synthetic")


def build_nodes(case: Case) -> tuple[KnowledgeTransferGraph, bool, bool]:
    """The graph of ``case`` on its device, set up for ``case.mode``; also (bf16 autocast, channels-last)."""
    config = MODES[case.mode][0]
    device = torch.device(case.device)
    configure_kernels(device, config.deterministic)
    resolved = config.resolved(device.type)
    amp, channels_last = resolved.amp, resolved.channels_last
    torch.manual_seed(0)
    graph = build_graph(benchmark_graph(case), case.classes).to(device)
    if channels_last:
        graph = graph.to(memory_format=torch.channels_last)
    return graph, amp, channels_last


def build_trial(case: Case, images: ImageSet) -> tuple[TrainStep, Iterator]:
    """The training step of ``case`` and an endless stream of its training batches."""
    config, loop_sgd = MODES[case.mode]
    device = torch.device(case.device)
    graph, amp, channels_last = build_nodes(case)
    if loop_sgd:
        optimizer = torch.optim.SGD(graph.parameters(), lr=config.lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay, foreach=False)
    else:
        optimizer = make_optimizer(graph, config, device)
    step = make_train_step(graph, optimizer, amp=amp, channels_last=channels_last, **compile_options(config))
    loader = BatchLoader(images, case.batch_size, reference_transforms(case.image_size)[0], device,
                         shuffle=True, drop_last=True)
    graph.train()
    return step, itertools.chain.from_iterable(loader.epoch(epoch) for epoch in itertools.count())


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_steps(step: TrainStep, batches: Iterator, count: int, iterations: Iterator[int]) -> None:
    for _ in range(count):
        images, labels = next(batches)
        step(images, labels, next(iterations), TOTAL_ITERATIONS)


def peak_memory_mib(device: torch.device) -> float | None:
    """GPU memory (MiB) this process's tensors have held at most since the last :func:`reset_peak_memory`
    (None off CUDA)."""
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def step_seconds(case: Case, images: ImageSet, *, warmup: int, steps: int,
                 repeats: int) -> tuple[list[float], int | None, float | None]:
    """Seconds per training step of ``case``, one value per repeat of ``steps`` steps, after ``warmup`` steps;
    the operators of one step (None for a compiled step, whose operators are fused); and the peak GPU memory
    of the trial in MiB (None off CUDA), the resident training images included."""
    device = torch.device(case.device)
    reset_peak_memory(device)
    step, batches = build_trial(case, images)
    iterations = itertools.count(1)
    run_steps(step, batches, warmup, iterations)
    operators = None
    if not MODES[case.mode][0].compile:
        with CountOperators() as counter:
            run_steps(step, batches, 1, iterations)
        operators = counter.count
    synchronize(device)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_steps(step, batches, steps, iterations)
        synchronize(device)
        seconds.append((time.perf_counter() - start) / steps)
    return seconds, operators, peak_memory_mib(device)


def eval_node_images_per_second(case: Case, images: ImageSet, batch_size: int) -> float:
    """Node-images/s of evaluation (every node's forward in float32, as ktg evaluates, with the fast mode's
    memory layout) over ``images``, after one warm-up pass."""
    device = torch.device(case.device)
    graph, _, channels_last = build_nodes(case)
    loader = BatchLoader(images, batch_size, reference_transforms(case.image_size)[1], device,
                         shuffle=False, drop_last=False)
    predict(graph, loader, channels_last=channels_last)
    synchronize(device)
    start = time.perf_counter()
    predict(graph, loader, channels_last=channels_last)
    synchronize(device)
    return len(images) * case.nodes / (time.perf_counter() - start)


# -- several trials at once ----------------------------------------------------------------------------


def concurrent_worker(case: Case, warmup: int, seconds: float, threads: int, environment: dict[str, str], barrier,
                      results) -> None:
    """One of K processes: build the trial, warm up, wait for the others, train for ``seconds``, report the
    steps, the seconds and the peak GPU memory.

    ``environment`` is set before CUDA starts: the fork server may predate the MPS daemon it names."""
    os.environ.update(environment)
    torch.set_num_threads(threads)
    try:
        device = torch.device(case.device)
        step, batches = build_trial(case, synthetic_images(case, device))
        iterations = itertools.count(1)
        run_steps(step, batches, warmup, iterations)
        synchronize(device)
        barrier.wait(timeout=600)
        start = time.perf_counter()
        steps = 0
        while time.perf_counter() - start < seconds:
            run_steps(step, batches, 1, iterations)
            steps += 1
        synchronize(device)
        results.put((steps, time.perf_counter() - start, peak_memory_mib(device), None))
    except Exception as error:  # reported as the row's error: an OOM at K = 8 must not hide K = 1, 2, 4
        barrier.abort()
        results.put((0, 0.0, None, f"{type(error).__name__}: {error}"))


def concurrent_node_images_per_second(case: Case, jobs: int, *, warmup: int, seconds: float, threads: int | None,
                                      mps: dict[str, str] | None = None) -> dict[str, Any]:
    """Aggregate node-images/s of ``jobs`` processes training ``case`` side by side on one device, through
    the CUDA MPS daemon whose variables ``mps`` holds if given (see :func:`ktg.runtime.mps.mps_daemon`).

    Processes come from a fork server that has imported torch and ktg once ("spawn" semantics: no CUDA state
    is inherited; each worker starts in a fraction of the time a fresh interpreter needs).
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "ktg.train", "ktg.search.space"])
    barrier, results = context.Barrier(jobs), context.Queue()
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    workers = [context.Process(target=concurrent_worker,
                               args=(case, warmup, seconds, threads, mps or {}, barrier, results))
               for _ in range(jobs)]
    for worker in workers:
        worker.start()
    try:
        reports = [results.get(timeout=900 + seconds) for _ in workers]
    except queue.Empty:  # a worker was killed (e.g. out of host memory) before it could report
        reports = [(0, 0.0, None, f"a worker died without reporting (exit codes {[w.exitcode for w in workers]})")]
    finally:
        for worker in workers:
            worker.join(timeout=60)
            if worker.is_alive():
                worker.terminate()
    errors = sorted({error for *_, error in reports if error is not None})
    row: dict[str, Any] = {"jobs": jobs, "batch_size": case.batch_size,
                           "mps": mps is not None or running_daemon() is not None}
    if errors:
        return {**row, "error": "; ".join(errors)}
    rates = [steps * case.batch_size * case.nodes / elapsed for steps, elapsed, *_ in reports]
    return {**row, "node_images_per_s": sum(rates), "per_job": rates,
            "peak_memory_mib_per_job": [memory for _, _, memory, _ in reports]}


# -- the search's wall-clock ---------------------------------------------------------------------------


def expected_epochs(max_epochs: int, min_resource: int, reduction_factor: int) -> float:
    """Mean epochs a trial trains under successive halving (Optuna's pruner, min_early_stopping_rate 0).

    Rungs sit at epochs r_k = min_resource · η^k for every k with r_k < max_epochs (η = reduction_factor;
    1, 2, 4, …, 256 for 300 epochs). At each rung a trial continues only if it is in the best 1/η of the
    trials that reached it, so a fraction η^-k of all trials reaches rung k, a fraction η^-k · (1 - 1/η)
    stops there after r_k epochs, and the η^-K that pass all K rungs train max_epochs:

        E = Σ_{k<K} η^-k (1 - 1/η) r_k + η^-K · max_epochs

    (5.09 epochs for 1 → 300 with η = 2). This is the steady state; the first few trials of a study are
    promoted more easily, which a 6,000-trial study does not notice.
    """
    rungs = list(itertools.takewhile(lambda r: r < max_epochs,
                                     (min_resource * reduction_factor**k for k in itertools.count())))
    stop = 1 - 1 / reduction_factor
    survive = reduction_factor ** -len(rungs)
    return sum(reduction_factor**-k * stop * r for k, r in enumerate(rungs)) + survive * max_epochs


def expected_evaluations(max_epochs: int, min_resource: int, reduction_factor: int) -> float:
    """Mean evaluations of a trial under successive halving when it is evaluated only where the pruner reads it:
    at its rungs and at its last epoch (:mod:`ktg.search.pruners`). A trial that stops at rung k was evaluated at
    rungs 0 … k; one that passes all K rungs at those and at the last epoch:

        E = Σ_{k<K} η^-k (1 - 1/η) (k + 1) + η^-K (K + 1)

    (2.00 for 1 → 300 with η = 2, against 5.09 epochs: evaluating every epoch evaluated 2.5 times as often).
    """
    rungs = len(successive_halving_rungs(min_resource, reduction_factor, max_epochs - 1))  # those before the last
    stop = 1 - 1 / reduction_factor
    return (sum(reduction_factor**-k * stop * (k + 1) for k in range(rungs))
            + reduction_factor**-rungs * (rungs + 1))


def project_search(args: argparse.Namespace, train_rate: float, eval_rate: float, jobs: int,
                   disk: dict[str, Any] | None = None) -> dict[str, Any]:
    """Wall-clock of the search: trials × (expected epochs × an epoch's training at ``train_rate`` + expected
    evaluations × an evaluation at ``eval_rate``), with ktg's rule (evaluated at the pruner's rungs and the last
    epoch) and, for comparison, every epoch evaluated; and its disk, from ``disk`` (:func:`measure_trial_disk`)."""
    epochs = expected_epochs(args.max_epochs, args.min_resource, args.reduction_factor)
    evaluations = expected_evaluations(args.max_epochs, args.min_resource, args.reduction_factor)
    train_images = args.train_images // args.jobs_batch_size * args.jobs_batch_size  # drop_last
    train_epoch = train_images * args.nodes / train_rate
    eval_epoch = args.val_images * args.nodes / eval_rate
    seconds = args.trials * (epochs * train_epoch + evaluations * eval_epoch)
    every_epoch = args.trials * epochs * (train_epoch + eval_epoch)
    return {
        "trials": args.trials, "expected_epochs_per_trial": epochs, "epochs": args.trials * epochs,
        "expected_evaluations_per_trial": evaluations,
        "train_images_per_epoch": train_images, "val_images_per_epoch": args.val_images, "jobs": jobs,
        "train_node_images_per_s": train_rate, "eval_node_images_per_s": eval_rate,
        "train_epoch_seconds": train_epoch, "eval_epoch_seconds": eval_epoch,
        # An evaluated image counts as a third of a trained one (forward only).
        "node_image_equivalents": args.trials * args.nodes * (epochs * train_images
                                                              + evaluations * args.val_images / 3),
        "seconds": seconds, "hours": seconds / 3600, "hours_evaluating_every_epoch": every_epoch / 3600,
        **({} if disk is None else project_disk(args, disk, epochs)),
    }


def project_defaults(args: argparse.Namespace, projection: dict[str, Any]) -> dict[str, Any]:
    """The same search with ``ktg search``'s defaults instead of the papers' protocol, at the rates of
    ``projection`` (:func:`project_search`): trials of the default length (:func:`~ktg.search.settings.
    trial_training`: as many steps on the ``--train-images`` as ``--max-epochs`` on them and the ``--val-images``
    together), the first rung at :func:`~ktg.search.settings.default_first_rung` of a trial's epochs, the baselines
    as trials of full length, and the race of the best searched graphs and the baselines, between
    :data:`~ktg.search.rescore.MIN_SEEDS` and ``--rescore-seeds`` full-length trials each. Counted in the papers'
    trials of ``--max-epochs`` (their full runs), which no device changes, and in hours at the measured rates."""
    holdout = args.val_images / (args.train_images + args.val_images)
    trial_epochs = trial_training(TrainConfig(epochs=args.max_epochs, holdout=holdout), DEFAULT_TRIAL_LENGTH).epochs
    first = default_first_rung(trial_epochs)
    epochs = expected_epochs(trial_epochs, first, args.reduction_factor)
    evaluations = expected_evaluations(trial_epochs, first, args.reduction_factor)
    train_epoch, eval_epoch = projection["train_epoch_seconds"], projection["eval_epoch_seconds"]
    full_run = trial_epochs * train_epoch + eval_epoch  # a baseline or a race run: evaluated at its end only
    contenders = DEFAULT_RESCORE_TOP + len(DEFAULT_BASELINES)
    race = (contenders * MIN_SEEDS, contenders * DEFAULT_RESCORE_SEEDS)
    trials_seconds = args.trials * (epochs * train_epoch + evaluations * eval_epoch)
    return {"trial_epochs": trial_epochs, "first_rung": first, "expected_epochs_per_trial": epochs,
            "papers_epochs_per_trial": projection["expected_epochs_per_trial"],
            "trial_full_runs": args.trials * epochs / args.max_epochs,
            "baseline_runs": len(DEFAULT_BASELINES) * trial_epochs / args.max_epochs,
            "race_runs": [runs * trial_epochs / args.max_epochs for runs in race],
            "hours": [(trials_seconds + (len(DEFAULT_BASELINES) + runs) * full_run) / 3600 for runs in race]}


def measure_trial_disk(case: Case, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """The bytes a search trial leaves, measured on a two-epoch trial of the heavy graph at the case's model, width
    and image size trained by :func:`ktg.train.train` on synthetic images: its checkpoint, its folder once the
    trial has ended (checkpoints deleted, as the search does) and, of that, ``split.json``; with the parameters of
    its nodes, and of ``args.nodes`` ABN-ResNet-18 nodes at ``args.dogs_classes`` classes, to scale by."""
    import tempfile

    from ktg.data import load_dataset
    from ktg.models import create_model
    from ktg.run_folder import RunFolder
    from ktg.train import train

    images = 2 * args.jobs_batch_size
    data = load_dataset("synthetic", image_size=case.image_size, train_size=images, test_size=args.jobs_batch_size,
                        num_classes=case.classes)
    spec = benchmark_graph(replace(case, graph="heavy"))
    config = TrainConfig(epochs=2, batch_size=args.jobs_batch_size, device=str(device), holdout=0.5)
    with tempfile.TemporaryDirectory() as folder:
        run = RunFolder(folder)
        train(spec, data, config, folder, progress=False)
        checkpoint = run.checkpoint_file.stat().st_size
        parameters = sum(t.numel() for t in run.load_checkpoint().model.values() if t.is_floating_point())
        run.delete_checkpoints()
        kept = sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())
        split = (Path(folder) / "split.json").stat().st_size
    node = create_model("abn_resnet18", args.dogs_classes).state_dict()
    dogs = args.nodes * sum(t.numel() for t in node.values() if t.is_floating_point())
    return {"trial_images": images, "trial_epochs": 2, "checkpoint_bytes": checkpoint, "parameters": parameters,
            "ended_trial_bytes": kept, "split_bytes": split, "dogs_parameters": dogs}


def project_disk(args: argparse.Namespace, disk: dict[str, Any], epochs: float) -> dict[str, Any]:
    """The search's disk, from a measured trial (:func:`measure_trial_disk`): a checkpoint scaled by parameters to
    the Dogs nodes; an ended trial's files scaled to the expected epochs (metrics and TensorBoard lines grow with
    them) and its ``split.json`` to the split's images. Before: every trial kept its latest and previous
    checkpoint (one for a trial stopped after its first epoch); now: none but the ``--keep-weights`` best."""
    checkpoint = disk["checkpoint_bytes"] * disk["dogs_parameters"] / disk["parameters"]
    split = disk["split_bytes"] * (args.train_images + args.val_images) / disk["trial_images"]
    ended = (disk["ended_trial_bytes"] - disk["split_bytes"]) * max(1.0, epochs / disk["trial_epochs"]) + split
    stop_first = 1 - 1 / args.reduction_factor if args.min_resource == 1 else 0.0
    checkpoints_before = stop_first + 2 * (1 - stop_first)
    return {"dogs_checkpoint_bytes": checkpoint, "ended_trial_bytes": ended,
            "disk_bytes": args.trials * ended + args.keep_weights * checkpoint,
            "disk_bytes_keeping_checkpoints": args.trials * (ended + checkpoints_before * checkpoint)}


# -- the run -------------------------------------------------------------------------------------------


def base_case(args: argparse.Namespace, device: torch.device) -> Case:
    images = max(args.batch_sizes + [args.jobs_batch_size, args.big_batch_size, args.eval_batch_size]) * 2
    return Case("independent", "fast", args.batch_sizes[0], str(device), args.model, args.width, args.image_size,
                args.nodes, args.classes, args.graph_seed, images)


def measure(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    base = base_case(args, device)
    images = synthetic_images(base, device)
    timing = {"warmup": args.warmup, "steps": args.steps, "repeats": args.repeats}
    rows = []
    for graph, mode, batch_size in itertools.product(GRAPHS, args.modes, args.batch_sizes):
        case = replace(base, graph=graph, mode=mode, batch_size=batch_size)
        print(f"timing {graph} {mode} batch {batch_size}", file=sys.stderr)
        seconds, operators, memory = step_seconds(case, images, **timing)
        median = statistics.median(seconds)
        rows.append({"graph": graph, "mode": mode, "batch_size": batch_size, "step_ms": 1000 * median,
                     "step_ms_repeats": [1000 * s for s in seconds], "operators_per_step": operators,
                     "node_images_per_s": batch_size * args.nodes / median, "peak_memory_mib": memory})
    measured = {"rows": rows, "graphs": {name: benchmark_graph(replace(base, graph=name)).to_dict()
                                         for name in GRAPHS}}
    if args.steps_only:
        return measured
    eval_rate = eval_node_images_per_second(base, images, args.eval_batch_size)

    search_case = replace(base, graph="random", mode="fast", batch_size=args.jobs_batch_size)
    timing = {"warmup": args.warmup, "seconds": args.seconds, "threads": args.threads}
    concurrency = []
    for jobs in args.jobs:
        print(f"{jobs} concurrent trials, {args.seconds:g} s", file=sys.stderr)
        concurrency.append(concurrent_node_images_per_second(search_case, jobs, **timing))
    if args.mps and running_daemon() is None:  # (with a daemon already running, the rows above used it)
        try:
            with mps_daemon() as variables:
                for jobs in args.jobs:
                    print(f"{jobs} concurrent trials through CUDA MPS, {args.seconds:g} s", file=sys.stderr)
                    concurrency.append(concurrent_node_images_per_second(search_case, jobs, mps=variables, **timing))
        except KTGError as error:  # MPS is not allowed everywhere: say so in its rows and keep every other number
            concurrency += [{"jobs": jobs, "batch_size": args.jobs_batch_size, "mps": True, "error": str(error)}
                            for jobs in args.jobs]
    print(f"one trial at batch {args.big_batch_size}, {args.seconds:g} s", file=sys.stderr)
    big = concurrent_node_images_per_second(replace(search_case, batch_size=args.big_batch_size), 1, **timing)
    print("disk of one search trial", file=sys.stderr)
    disk = measure_trial_disk(base, args, device)
    return {**measured, "eval_node_images_per_s": eval_rate, "concurrency": concurrency, "big_batch": big,
            "trial_disk": disk}


def row(rows: list[dict], graph: str, mode: str, batch_size: int) -> dict | None:
    return next((r for r in rows if (r["graph"], r["mode"], r["batch_size"]) == (graph, mode, batch_size)), None)


def summarise(args: argparse.Namespace, measured: dict[str, Any], judge: bool) -> dict[str, Any]:
    """Ratios, the recommended number of concurrent trials, the projection and the issue's targets, judged
    (``met`` true or false) only if ``judge``: they were set for a Hopper GPU (H100, H200)."""
    rows = measured["rows"]
    ratios: dict[str, float] = {}
    for graph, batch_size in itertools.product(GRAPHS, args.batch_sizes):
        fast, reference = row(rows, graph, "fast", batch_size), row(rows, graph, "reference", batch_size)
        if fast and reference:
            ratios[f"fast/reference node-images/s, {graph}, batch {batch_size}"] = \
                fast["node_images_per_s"] / reference["node_images_per_s"]
    for mode, batch_size in itertools.product(args.modes, args.batch_sizes):
        heavy_row, independent_row = row(rows, "heavy", mode, batch_size), row(rows, "independent", mode, batch_size)
        ratios[f"heavy/independent step time, {mode}, batch {batch_size}"] = \
            heavy_row["step_ms"] / independent_row["step_ms"]
        if heavy_row["operators_per_step"] and independent_row["operators_per_step"]:
            ratios[f"heavy/independent operators per step, {mode}, batch {batch_size}"] = \
                heavy_row["operators_per_step"] / independent_row["operators_per_step"]
    if "concurrency" not in measured:  # --steps-only
        return {"ratios": ratios}

    ok = [r for r in measured["concurrency"] if "node_images_per_s" in r]
    best_rate = max((r["node_images_per_s"] for r in ok), default=math.nan)
    # Within 5 % of the best, without MPS if that will do (not every cluster allows it), then the fewest
    # processes (more cost memory): gains smaller than that are not measurable.
    recommended = min((r for r in ok if r["node_images_per_s"] >= 0.95 * best_rate),
                      key=lambda r: (r["mps"], r["jobs"]), default=None)
    jobs = recommended["jobs"] if recommended else None
    train_rate = recommended["node_images_per_s"] if recommended else math.nan
    big_rate = measured["big_batch"].get("node_images_per_s", math.nan)
    projection = project_search(args, train_rate, measured["eval_node_images_per_s"], jobs or 0,
                                measured["trial_disk"])

    def target(name: str, value: float, limit: float, at_most: bool) -> dict[str, Any]:
        met = (value <= limit if at_most else value >= limit) if judge and math.isfinite(value) else None
        return {"target": name, "value": value, "limit": limit, "at_most": at_most, "met": met}

    def ratio(key: str) -> float:
        return ratios.get(key, math.nan)

    targets = [
        target("heavy step / independent step, fast, batch 64", ratio("heavy/independent step time, fast, batch 64"),
               1.15, at_most=True),
        target("fast / reference node-images/s, heavy, batch 16",
               ratio("fast/reference node-images/s, heavy, batch 16"), 3.0, at_most=False),
        target(f"best concurrent batch-{args.jobs_batch_size} / one trial at batch {args.big_batch_size}",
               best_rate / big_rate, 0.8, at_most=False),
        target("projected search hours", projection["hours"], HOURS_TARGET, at_most=True),
    ]
    return {"ratios": ratios, "recommended_jobs_per_device": jobs,
            "recommended_mps": recommended["mps"] if recommended else None, "projection": projection,
            "projection_with_ktg_defaults": project_defaults(args, projection),
            "targets": targets}


def finite_or_none(data: Any) -> Any:
    """``data`` with NaN (a ratio of rows that were not measured) as None, so the JSON file is standard JSON."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: finite_or_none(value) for key, value in data.items()}
    if isinstance(data, list):
        return [finite_or_none(value) for value in data]
    return data


def is_hopper(device: torch.device) -> bool:
    """Whether ``device`` is a Hopper GPU (compute capability 9.x: H100, H200), the GPUs the targets are set for."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] == 9


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def print_table(results: dict[str, Any]) -> None:
    settings, summary = results["settings"], results["summary"]
    print(f"\nktg training benchmark on {results['device']}, torch {results['torch']}: {settings['nodes']} × "
          f"{settings['model']} (width {settings['width'] or 'default'}), {settings['image_size']} px, "
          f"{settings['classes']} classes")
    for mode in settings["modes"]:
        print(f"  {mode:<10} {results['modes'][mode]}")
    print(f"\n{'graph':<12}{'mode':<11}{'batch':>6}{'step ms':>10}{'node-img/s':>12}{'ops/step':>10}"
          f"{'peak MiB':>10}")
    for r in results["rows"]:
        operators = "—" if r["operators_per_step"] is None else r["operators_per_step"]
        memory = "—" if r["peak_memory_mib"] is None else f"{r['peak_memory_mib']:.0f}"
        print(f"{r['graph']:<12}{r['mode']:<11}{r['batch_size']:>6}{r['step_ms']:>10.1f}"
              f"{r['node_images_per_s']:>12.0f}{operators:>10}{memory:>10}")
    print()
    for name, value in summary["ratios"].items():
        print(f"  {name:<60}{value:>7.2f}×")
    if "concurrency" not in results:  # --steps-only
        return
    print(f"\nconcurrent trials ({settings['nodes']} nodes, random graph, fast), aggregate node-img/s:")
    for r in results["concurrency"] + [results["big_batch"]]:
        label = f"{r['jobs']} × batch {r['batch_size']}{', MPS' if r['mps'] else ''}"
        value = f"{r['node_images_per_s']:>10.0f}" if "node_images_per_s" in r else f"  failed: {r['error']}"
        print(f"  {label:<25}{value}")
    mps = " --mps" if summary["recommended_mps"] else ""
    print(f"  recommended: --jobs-per-device {summary['recommended_jobs_per_device']}{mps}")
    p = summary["projection"]
    print(f"\nprojected search: {p['trials']} trials × {p['expected_epochs_per_trial']:.2f} epochs (successive "
          f"halving) = {p['epochs']:.0f} epochs ({p['node_image_equivalents']:.2g} node-image-equivalents);\n"
          f"  an epoch trains {p['train_images_per_epoch']} images in {p['train_epoch_seconds']:.1f} s "
          f"(--jobs-per-device {p['jobs']}) and an evaluation of {p['val_images_per_epoch']} images takes "
          f"{p['eval_epoch_seconds']:.1f} s, {p['expected_evaluations_per_trial']:.2f} a trial (at the rungs and the "
          f"last epoch): {p['hours']:.1f} h ({p['hours_evaluating_every_epoch']:.1f} h evaluating every epoch);\n"
          f"  disk: {p['ended_trial_bytes'] / 1e6:.2f} MB an ended trial, {p['dogs_checkpoint_bytes'] / 1e9:.2f} GB a "
          f"checkpoint of the Dogs nodes, kept for the {settings['keep_weights']} best: "
          f"{p['disk_bytes'] / 1e9:.1f} GB ({p['disk_bytes_keeping_checkpoints'] / 1e12:.2f} TB keeping every "
          f"trial's checkpoints)")
    d = summary["projection_with_ktg_defaults"]
    print(f"  with ktg search's defaults instead (trials of {d['trial_epochs']} epochs, first rung {d['first_rung']}, "
          f"the baselines {d['baseline_runs']:g} full runs, the race {d['race_runs'][0]:g}–{d['race_runs'][1]:g}): "
          f"{d['expected_epochs_per_trial']:.1f} epochs a trial instead of {d['papers_epochs_per_trial']:.2f}, "
          f"{d['trial_full_runs']:.0f} full runs in the trials; {d['hours'][0]:.0f}–{d['hours'][1]:.0f} h")
    print("\nthe issue's targets, set for a Hopper GPU, H100 or H200 (judged only on one):")
    for t in summary["targets"]:
        verdict = {True: "met", False: "NOT met", None: ""}[t["met"]]
        sign = "≤" if t["at_most"] else "≥"
        print(f"  {t['target']:<60}{t['value']:>8.2f}  ({sign} {t['limit']:g}) {verdict}")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=True)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny models at 32 px, few steps, 1 s per concurrency run: any machine, < 1 minute")
    parser.add_argument("--model", help="every node's model (default: abn_resnet18, or abn_resnet20 at ≤ 64 px)")
    parser.add_argument("--width", type=int, help="base width of the models (default: the model's; --quick: 4)")
    parser.add_argument("--image-size", type=int, help="(default: 224; --quick: 32)")
    parser.add_argument("--nodes", type=int, default=3, help="(default: 3)")
    parser.add_argument("--classes", type=int, help="(default: 120, Stanford Dogs; --quick: 10)")
    parser.add_argument("--graph-seed", type=int, default=0, help="seed of the random graph (default: 0)")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=["reference", "fast"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64], help="(default: 16 64)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default: 10; --quick: 1)")
    parser.add_argument("--steps", type=int, help="steps per timed repeat (default: 20; --quick: 1)")
    parser.add_argument("--repeats", type=int, help="timed repeats; the median counts (default: 5; --quick: 3)")
    parser.add_argument("--eval-batch-size", type=int, help="(default: 256; --quick: 64)")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2, 4, 8],
                        help="numbers of concurrent trials to measure (default: 1 2 4 8)")
    parser.add_argument("--jobs-batch-size", type=int, default=16, help="batch of each concurrent trial (default: 16)")
    parser.add_argument("--big-batch-size", type=int, default=128,
                        help="batch of the one-trial yardstick (default: 128)")
    parser.add_argument("--mps", action="store_true", help="also measure the concurrent trials side by side "
                        "through CUDA MPS (a private daemon, quit at the end; as ktg search --mps)")
    parser.add_argument("--seconds", type=float, help="seconds each concurrency run trains (default: 30; --quick: 1)")
    parser.add_argument("--steps-only", action="store_true", help="time the training steps only: no evaluation, "
                        "concurrent trials, yardstick, projection or targets")
    group = parser.add_argument_group("projection (the papers' search: docs/method.md#search)")
    group.add_argument("--trials", type=int, default=6000, help="(default: 6000)")
    group.add_argument("--train-images", type=int, default=6000, help="per epoch (default: 6000, Dogs' 50 %% split)")
    group.add_argument("--val-images", type=int, default=6000, help="per epoch (default: 6000)")
    group.add_argument("--max-epochs", type=int, default=300, help="(default: 300)")
    group.add_argument("--min-resource", type=int, default=1, help="successive halving (default: 1)")
    group.add_argument("--reduction-factor", type=int, default=2, help="successive halving (default: 2)")
    group.add_argument("--keep-weights", type=int, default=10, metavar="K",
                       help="trials whose final weights are kept, as ktg search --keep-weights best:K (default: 10)")
    group.add_argument("--dogs-classes", type=int, default=120,
                       help="classes of the ABN-ResNet-18 nodes a checkpoint is scaled to (default: 120, Dogs)")
    parser.add_argument("--threads", type=int, help="torch CPU threads of every process (default: the cores shared "
                        "among the processes; --quick: 1, as tiny models on a busy machine time thread hand-offs)")
    parser.add_argument("--json", type=Path, help="also write every measurement to this JSON file")
    return parser


#: Defaults of the options that ``--quick`` shrinks: (full run, quick run).
SCALED_DEFAULTS = {"image_size": (224, 32), "width": (None, 4), "classes": (120, 10), "warmup": (10, 1),
                   "steps": (20, 1), "repeats": (5, 3), "eval_batch_size": (256, 64), "seconds": (30.0, 1.0),
                   "threads": (None, 1)}


def apply_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the options left unset with the full run's or the quick run's default."""
    for key, (full, quick) in SCALED_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    return args


def mode_description(mode: str, device: torch.device) -> str:
    config, loop_sgd = MODES[mode]
    resolved = config.resolved(device.type)
    optimizer = "for-loop" if loop_sgd else ("fused" if device.type == "cuda" else "foreach")
    return ", ".join([
        resolved.precision, "channels-last" if resolved.channels_last else "NCHW",
        (f"torch.compile ({config.compile_mode})" if config.compile else "eager"),
        "deterministic kernels" if config.deterministic else "autotuned kernels", f"{optimizer} SGD",
    ])


def main(args: argparse.Namespace) -> int:
    args = apply_defaults(args)
    device = resolve_device(args.device)
    if args.mps and device.type != "cuda":
        raise KTGError(f"--mps measures trials sharing a CUDA GPU; this benchmark runs on {device}")
    if args.threads:
        torch.set_num_threads(args.threads)
    measured = measure(args, device)
    name = describe_device(device)
    summary = summarise(args, measured, judge=is_hopper(device))
    model = benchmark_graph(base_case(args, device)).nodes[0].model
    results = {
        "device": name, "torch": torch.__version__,
        "settings": {**{key: value for key, value in vars(args).items() if key != "json"}, "model": model},
        "modes": {mode: mode_description(mode, device) for mode in args.modes},
        **measured, "summary": summary,
    }
    if args.json:
        write_json(args.json, finite_or_none(results))
    print_table(results)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(get_args_parser().parse_args()))
    except KTGError as error:
        print(f"benchmark: error: {error}", file=sys.stderr)
        sys.exit(2)
