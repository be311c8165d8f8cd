"""Training a knowledge transfer graph: one run, from a graph, a dataset and a config to files a person can open.

Read it top to bottom: :func:`train` prepares the run (everything is checked before its folder is touched),
resumes it if asked, then alternates :func:`train_one_epoch` and :func:`evaluate`, saving a checkpoint after
every epoch; the helpers they use follow in that order. The run's files belong to :class:`ktg.run_folder.RunFolder`.
Callers talk to a run through two narrow callbacks: after each epoch one receives the epoch's metrics and may
answer "stop" (the search prunes this way), and one is called when the run has finished (the command line adds
the attention grid this way).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Collection, Sequence

import torch

from ktg import __version__
from ktg.bagging import bootstrap_counts
from ktg.config import TrainConfig, differences, training_identity
from ktg.data import DataSource
from ktg.data.images import Dataset, ImageSet, check_fingerprint, fingerprint, stratified_split
from ktg.data.loader import BatchLoader
from ktg.data.transforms import BatchTransform
from ktg.engine import KnowledgeTransferGraph, StepLosses, build_graph, ensemble_logits, graph_outputs
from ktg.errors import KTGError
from ktg.graph import GraphSpec
from ktg.nonfinite import FirstNonFiniteStep
from ktg.optim import make_optimizer, make_scheduler
from ktg.progress import Progress, inner_bar
from ktg.provenance import provenance
from ktg.run_folder import Checkpoint, EpochRecord, FinalMetrics, RunConfig, RunFolder
from ktg.runtime import (
    autocast,
    compile_options,
    configure_kernels,
    naming_nondeterministic_ops,
    resolve_device,
)

#: Called after every epoch with (epoch number from 1, that epoch's record); returning True stops training.
EpochCallback = Callable[[int, EpochRecord], bool]
#: Called once when a run has trained all its epochs (not when its callback stopped it) with (the run's
#: TensorBoard SummaryWriter, the trained graph, the evaluated images, their transform, the last epoch), to add
#: what only a finished run shows: the command line passes :func:`ktg.viz.attention.log_attention_grid`.
FinishCallback = Callable[[Any, KnowledgeTransferGraph, ImageSet, BatchTransform, int], None]


def train(
    spec: GraphSpec,
    dataset: Dataset,
    config: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    restart: bool = False,
    eval_epochs: Collection[int] | None = None,
    callback: EpochCallback | None = None,
    on_finish: FinishCallback | None = None,
    progress: bool = True,
) -> FinalMetrics:
    """Train the graph ``spec`` on ``dataset`` and write the run into ``out_dir`` (see :class:`RunFolder`).

    ``spec`` must be resolved (:meth:`GraphSpec.resolved`): the trainer adds nothing to it, so its graph.json is
    the graph as given. ``dataset.source`` is saved so that ``ktg eval`` can load the data again.

    Everything that can be checked is checked before the folder is touched: the options, the device, the
    graph's models and one probe step (a crop size that does not fit the attention map, say). While it
    trains, the folder is locked against a second writer.

    Args:
        resume: continue the run in ``out_dir`` from its checkpoint (same graph and config required); a
            damaged latest checkpoint is reported and the previous epoch's is taken.
        restart: replace the run in ``out_dir``, if there is one.
        eval_epochs: the epochs (from 1) after which the evaluated split is evaluated; None: every epoch. The
            epoch a run ends with is always evaluated (the last, or where the callback stopped it): the final
            metrics are its.
        callback: see :data:`EpochCallback`. A resumed run's callback first receives the epochs done before, in
            order, so that a caller deciding on them (the search's pruner) decides again; if it answers "stop",
            the run ends where it was.
        on_finish: see :data:`FinishCallback`.
        progress: a bar on a terminal, one line per epoch in a log (see :class:`ktg.progress.Progress`).

    Returns:
        The final metrics (also written to ``metrics.json``).
    """
    if not spec.is_resolved:
        raise ValueError("train() needs a resolved graph (every node's model set): see GraphSpec.resolved")

    # Prepare the run: nothing here writes a file.
    run = RunFolder(out_dir)
    device = resolve_device(config.device)
    config = config.resolved(device.type)  # saved settled: a run says what it computed, not what it was left to
    amp, channels_last = config.amp, config.channels_last
    configure_kernels(device, config.deterministic)
    train_images, eval_images, eval_split, split = split_for_training(dataset, config)
    torch.manual_seed(config.seed)
    graph = build_graph(spec, dataset.num_classes, dataset.image_size).to(device)
    if channels_last:
        graph = graph.to(memory_format=torch.channels_last)
    with naming_nondeterministic_ops():
        probe_step(graph, eval_images, dataset.eval_transform, device)
    optimizer = make_optimizer(graph, config, device)
    scheduler = make_scheduler(optimizer, config)
    bootstrap = bootstrap_counts(spec, len(train_images), config.seed)
    train_loader = BatchLoader(train_images, config.batch_size, dataset.train_transform, device,
                               shuffle=True, drop_last=config.drop_last, seed=config.seed)
    eval_loader = BatchLoader(eval_images, config.eval_batch_size, dataset.eval_transform, device,
                              shuffle=False, drop_last=False)
    step = make_train_step(graph, optimizer, amp=amp, channels_last=channels_last, **compile_options(config))
    total_iterations = config.epochs * len(train_loader)

    with run.writing(resume=resume, restart=restart):
        history = resume_from(run, graph, optimizer, scheduler, spec, config, device) if resume else []
        run.write_graph(spec)
        run.write_config(RunConfig(train=config, data=dataset.source or DataSource(dataset.name),
                                   eval_split=eval_split, num_classes=dataset.num_classes,
                                   classes=tuple(dataset.train.classes), image_size=dataset.image_size,
                                   ktg_version=__version__, provenance=provenance(config, device)))
        if split is not None:
            if resume:  # the split is drawn again from the data as loaded now: it must be the same images
                check_fingerprint((run.read_split() or {}).get("fingerprint"), dataset.train,
                                  f"--resume: the held-out split saved in {run.path}")
            run.write_split(split)
        if bootstrap:
            run.write_bagging(config.seed, {node: counts.int().tolist() for node, counts in bootstrap.items()})
            bootstrap = {node: counts.to(device) for node, counts in bootstrap.items()}
        run.start_epochs(history)

        from torch.utils.tensorboard import SummaryWriter  # imported late: it is slow and only runs need it

        writer = SummaryWriter(str(run.tensorboard_dir), purge_step=len(history) + 1)
        display = Progress(config.epochs, desc="training", unit="epoch", initial=len(history), enabled=progress)
        stopped_early = callback is not None and any(callback(record.epoch, record) for record in history)
        try:
            for epoch in range(len(history), len(history) if stopped_early else config.epochs):
                lr = optimizer.param_groups[0]["lr"]
                with naming_nondeterministic_ops():  # a backward without a deterministic kernel shows only here
                    stats = train_one_epoch(graph, step, train_loader, epoch, total_iterations, progress=progress,
                                            bootstrap=bootstrap)
                scheduler.step()
                evaluated = eval_epochs is None or epoch + 1 in eval_epochs or epoch + 1 == config.epochs
                accuracy = measure_accuracy(graph, eval_loader, channels_last=channels_last) if evaluated else {}
                record = EpochRecord(epoch=epoch + 1, split=eval_split, lr=lr, **stats, **accuracy)
                history.append(record)
                run.save_checkpoint(Checkpoint(epoch=epoch + 1, model=graph.state_dict(),
                                               optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                                               graph=spec, train=config, history=tuple(history),
                                               rng=rng_state(device)))
                run.append_epoch(record)
                log_tensorboard(writer, record)
                display.finished(epoch_line(record, config.epochs),
                                 **({"ensemble": f"{record.ensemble_accuracy:.3f}",
                                     "best_node": f"{max(record.node_accuracy):.3f}"} if record.evaluated else {}))
                if callback is not None and callback(epoch + 1, record):
                    stopped_early = True
                    break
            if not history[-1].evaluated:  # stopped after an epoch outside eval_epochs: the final metrics need it
                history[-1] = dataclasses.replace(history[-1], **measure_accuracy(graph, eval_loader,
                                                                                  channels_last=channels_last))
                run.start_epochs(history)
                log_accuracy(writer, history[-1])
            if on_finish is not None and not stopped_early:  # a pruned trial, say, did not finish
                on_finish(writer, graph, eval_images, dataset.eval_transform, len(history))
        finally:
            display.close()
            writer.close()

        final = summarise(history, eval_split, dataset.name, spec, stopped_early)
        run.write_metrics(final)
    return final


# -- preparing the run -----------------------------------------------------------------------------------


def split_for_training(dataset: Dataset, config: TrainConfig) -> tuple[ImageSet, ImageSet, str, dict | None]:
    """(training images, evaluation images, name of the evaluated split, saved split or None). The saved split
    holds the :func:`~ktg.data.images.fingerprint` of the training split its indices index, so that nothing
    applies them to other images (``ktg eval --split val``, ``--resume``)."""
    if config.holdout is None:
        return dataset.train, dataset.test, "test", None
    kept, held_out = stratified_split(dataset.train.labels, config.holdout, config.holdout_seed)
    split = {"holdout": config.holdout, "seed": config.holdout_seed, "fingerprint": fingerprint(dataset.train),
             "train_indices": kept.tolist(), "val_indices": held_out.tolist()}
    return (dataset.train.subset(kept, f"{dataset.name}/train-part"),
            dataset.train.subset(held_out, f"{dataset.name}/val"), "val", split)


@torch.no_grad()
def probe_step(graph: KnowledgeTransferGraph, images: ImageSet, transform: BatchTransform,
               device: torch.device) -> None:
    """Run the graph's forward and losses once on two of ``images``, in eval mode, so that a graph that cannot
    train (an attention crop larger than the attention map, say) fails before its run folder is touched."""
    first = torch.arange(min(2, len(images)))
    sizes = None if images.original_sizes is None else images.original_sizes[first]
    batch = transform(images.images[first].to(device), original_sizes=sizes)
    was_training = graph.training
    graph.eval()
    try:
        with torch.no_grad():  # a check, not a step: nothing to differentiate
            graph.losses(graph(batch), images.labels[first].to(device), 1, 1)
    finally:
        graph.train(was_training)


def resume_from(run: RunFolder, graph: KnowledgeTransferGraph, optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler, spec: GraphSpec, config: TrainConfig,
                device: torch.device) -> list[EpochRecord]:
    """Load the run's checkpoint into ``graph``, ``optimizer`` and ``scheduler``; returns the epochs done.

    The graph and the training identity (:func:`ktg.config.training_identity`, the rule a study's workers obey
    too) of the resolved ``config`` must be those of the saved run: only where and how fast it runs may change.
    """
    state = run.load_checkpoint()
    if not state.graph.trains_as(spec):
        raise KTGError(f"--resume: the graph differs from the one in {run.graph_file}; resume with the same graph")
    # A checkpoint saved before runs settled their precision (amp None) is settled for this device, as the
    # unsettled values were compared then.
    saved = state.train.resolved(device.type)
    changed = differences(training_identity(saved), training_identity(config), stored_as="saved run has",
                          given_as="you gave")
    if changed:
        raise KTGError(f"--resume: the run would train differently from the saved one ({'; '.join(changed)}); "
                       f"resume with the same options")
    try:
        graph.load_state_dict(state.model)
    except RuntimeError as error:
        raise KTGError(f"--resume: the saved weights do not fit this graph ({str(error).splitlines()[0]}); resume "
                       f"with the same data") from None
    optimizer.load_state_dict(state.optimizer)
    scheduler.load_state_dict(state.scheduler)
    if state.rng is not None:
        torch.set_rng_state(state.rng["cpu"])
        if "cuda" in state.rng and device.type == "cuda":
            torch.cuda.set_rng_state(state.rng["cuda"], device)
    return list(state.history)


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The states of the random-number generators a run on ``device`` draws from, for its checkpoint. (Batch order
    and augmentation have generators of their own, seeded per epoch: see :func:`ktg.data.loader.epoch_generator`.)"""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


# -- one epoch of training -------------------------------------------------------------------------------


def train_one_epoch(
    graph: KnowledgeTransferGraph,
    step: TrainStep,
    loader: BatchLoader,
    epoch: int,
    total_iterations: int,
    *,
    progress: bool,
    bootstrap: dict[int, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Train every node for one epoch with ``step`` (see :func:`make_train_step`); returns the epoch's mean
    loss per edge and mean gate weight per edge. ``bootstrap`` maps bagging nodes to their per-sample counts
    over the training split (see :func:`bootstrap_counts`). ``progress``: a bar over the batches on a terminal.

    Nothing is read back from the device inside the loop: per-edge sums stay on the device and are read
    once at the end. A non-finite loss stops the epoch a fixed :data:`~ktg.nonfinite.LAG` steps after the step
    that produced it, naming that step and its edges, without a host sync per step (see
    :mod:`ktg.nonfinite`). On CUDA the stats also hold the epoch's peak GPU memory in MiB (what bounds the
    trials that fit on one GPU).
    """
    on_cuda = loader.device.type == "cuda"
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(loader.device)
    graph.train()
    names: list[str] = []
    loss_sums = weight_sums = None
    watch: FirstNonFiniteStep | None = None
    steps = 0
    start = time.perf_counter()
    batches = inner_bar(loader.epoch(epoch, with_index=True), total=len(loader), desc=f"epoch {epoch + 1}",
                        unit="batch", enabled=progress)
    for index, (images, labels, positions) in enumerate(batches):
        sample_weights = {node: counts[positions] for node, counts in bootstrap.items()} if bootstrap else None
        step_losses = step(images, labels, epoch * len(loader) + index + 1, total_iterations, sample_weights)
        terms, weights = step_losses.stacked()
        if loss_sums is None:
            names = list(step_losses.terms)
            loss_sums, weight_sums = torch.zeros_like(terms), torch.zeros_like(weights)
            watch = FirstNonFiniteStep(names, terms.device)
        loss_sums += terms
        weight_sums += weights
        steps += 1
        found = watch.record(terms)
        if found is not None:
            raise NonFiniteLossError(epoch + 1, *found, of=len(loader))
    if watch is None:
        raise KTGError(f"{loader.name} has fewer images than one batch ({loader.batch_size}); lower --batch-size")
    found = watch.finish()
    if found is not None:
        raise NonFiniteLossError(epoch + 1, *found, of=len(loader))
    mean_losses = (loss_sums / steps).tolist()
    mean_weights = (weight_sums / steps).tolist()
    seconds = time.perf_counter() - start
    memory = {"peak_memory_mib": torch.cuda.max_memory_allocated(loader.device) / 2**20} if on_cuda else {}
    return {
        "train_loss": sum(mean_losses),
        "losses": dict(zip(names, mean_losses)),
        "gate_weights": dict(zip(names, mean_weights)),
        "train_seconds": seconds,
        "images_per_second": loader.num_images / seconds,
        **memory,
    }


#: One optimisation step: (images B×3×H×W, labels B, iteration k from 1, total iterations K, bagging nodes'
#: per-sample weights or None) → the step's losses.
TrainStep = Callable[[torch.Tensor, torch.Tensor, int, int, "dict[int, torch.Tensor] | None"], StepLosses]


def make_train_step(
    graph: KnowledgeTransferGraph,
    optimizer: torch.optim.Optimizer,
    *,
    amp: bool,
    channels_last: bool,
    compile_backend: str | None = None,
    compile_mode: str = "default",
) -> TrainStep:
    """The training step of every node at once: forward, gated edge losses, one backward, one optimizer step.

    The step reads nothing back to the host, so on CUDA the CPU queues the next steps while the GPU works.
    ``graph`` must be in training mode.

    Args:
        amp: run forward and losses under bf16 autocast (losses are computed in float32 all the same).
        channels_last: give the nodes channels-last batches (the nodes must be channels-last too).
        compile_backend: None runs eagerly; otherwise the graph's forward (all nodes, and with it their
            backward) runs through ``torch.compile(backend=compile_backend, dynamic=False)``. The edge losses
            stay eager: they change from trial to trial, while the forward depends only on the nodes, so
            later graphs with the same models and batch shape reuse the compiled code in this process
            without recompiling, and the iteration k never enters compiled code.
        compile_mode: torch.compile's ``mode`` (see :data:`ktg.config.COMPILE_MODES`); backends other than inductor
            ignore it.
    """
    forward = graph if compile_backend is None else torch.compile(graph, backend=compile_backend, mode=compile_mode,
                                                                  dynamic=False)
    replays_cuda_graphs = compile_backend is not None and compile_mode == "reduce-overhead"

    def step(images: torch.Tensor, labels: torch.Tensor, iteration: int, total_iterations: int,
             sample_weights: dict[int, torch.Tensor] | None = None) -> StepLosses:
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if replays_cuda_graphs:  # the last step's graph outputs may be overwritten from here on
            torch.compiler.cudagraph_mark_step_begin()
        with autocast(images.device, amp):
            outputs = forward(images)
            step_losses = graph.losses(outputs, labels, iteration, total_iterations, sample_weights)
        optimizer.zero_grad(set_to_none=True)
        if step_losses.terms:  # else every edge is cut off: no weight gets a gradient, so the step moves none
            step_losses.total.backward()
        optimizer.step()
        return step_losses

    return step


class NonFiniteLossError(KTGError):
    """A loss became NaN or infinite at step ``step`` (from 1, of ``of``) of epoch ``epoch`` on ``edges``; the
    run stopped (a few steps later, see :mod:`ktg.nonfinite`) without saving that epoch; the checkpoint of the
    epoch before is kept, and in the first epoch there is none (the message says which)."""

    def __init__(self, epoch: int, step: int, edges: list[str], *, of: int) -> None:
        kept = (f"the checkpoint of epoch {epoch - 1} is kept" if epoch > 1 else
                "no epoch had finished, so no checkpoint exists")
        super().__init__(
            f"non-finite loss in epoch {epoch}, step {step} of {of}, on {', '.join(edges)}; the run stopped "
            f"without saving that epoch, and {kept}. Lower --lr or check the data."
        )
        self.epoch = epoch
        self.step = step
        self.edges = edges


# -- evaluation ------------------------------------------------------------------------------------------


def evaluate(graph: KnowledgeTransferGraph, loader: BatchLoader, *, channels_last: bool = False,
             progress: bool = False) -> tuple[list[float], float]:
    """Top-1 accuracy of every node and of the ensemble node on ``loader`` (see :func:`predict`)."""
    logits, labels = predict(graph, loader, channels_last=channels_last, progress=progress)
    return accuracies(logits, labels, graph.spec.members)


def measure_accuracy(graph: KnowledgeTransferGraph, loader: BatchLoader, *, channels_last: bool) -> dict[str, Any]:
    """:func:`evaluate` as the fields of an :class:`EpochRecord`: the accuracies and the seconds they took."""
    start = time.perf_counter()
    node_accuracy, ensemble_accuracy = evaluate(graph, loader, channels_last=channels_last)
    return {"node_accuracy": tuple(node_accuracy), "ensemble_accuracy": ensemble_accuracy,
            "eval_seconds": time.perf_counter() - start}


@torch.no_grad()
def predict(graph: KnowledgeTransferGraph, loader: BatchLoader, *, channels_last: bool = False,
            progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Perception logits of every node on every image of ``loader``: (N×M×C float32, M labels), on its device,
    computed by :func:`ktg.engine.graph_outputs` (evaluation mode, float32; ``channels_last`` as there)."""
    all_logits, all_labels = [], []
    for images, labels in inner_bar(loader.epoch(0), total=len(loader), desc="evaluate", unit="batch",
                                    enabled=progress):
        all_logits.append(graph_outputs(graph, images, channels_last=channels_last).node_logits)
        all_labels.append(labels)
    return torch.cat(all_logits, dim=1), torch.cat(all_labels)


def accuracies(logits: torch.Tensor, labels: torch.Tensor,
               members: Sequence[int] | None = None) -> tuple[list[float], float]:
    """Top-1 accuracy in [0, 1] of every node and of the ensemble node (the mean of the ``members``' logits,
    all nodes by default), from N×M×C logits."""
    node_correct = (logits.argmax(dim=2) == labels).float().mean(dim=1)
    ensemble = ensemble_logits(logits if members is None else logits[list(members)])
    ensemble_correct = (ensemble.argmax(dim=1) == labels).float().mean()
    values = torch.cat([node_correct, ensemble_correct[None]]).tolist()
    return values[:-1], values[-1]


# -- what a run reports ----------------------------------------------------------------------------------


def epoch_line(record: EpochRecord, epochs: int) -> str:
    """One line about a finished epoch, for logs: its accuracies on the evaluated split (if it was evaluated),
    loss and speed."""
    if record.evaluated:
        nodes = " ".join(f"{100 * value:.2f}" for value in record.node_accuracy)
        accuracy = f"ensemble {100 * record.ensemble_accuracy:.2f} %, nodes {nodes} % on {record.split}"
    else:
        accuracy = "not evaluated"
    return (f"epoch {record.epoch}/{epochs}: {accuracy}; loss {record.train_loss:.4f}, lr {record.lr:.4g}, "
            f"{record.train_seconds:.1f} s ({record.images_per_second:.0f} images/s)")


def log_tensorboard(writer: Any, record: EpochRecord) -> None:
    """Add one epoch's metrics to the run's TensorBoard log."""
    step = record.epoch
    log_accuracy(writer, record)
    writer.add_scalar("loss/total", record.train_loss, step)
    for name, value in record.losses.items():
        writer.add_scalar(f"loss/{name}", value, step)
    for name, value in record.gate_weights.items():
        writer.add_scalar(f"gate_weight/{name}", value, step)
    writer.add_scalar("lr", record.lr, step)
    writer.add_scalar("throughput/images_per_second", record.images_per_second, step)
    writer.flush()


def log_accuracy(writer: Any, record: EpochRecord) -> None:
    """Add an evaluated epoch's accuracies to the run's TensorBoard log (nothing for an epoch not evaluated)."""
    if record.evaluated:
        for i, value in enumerate(record.node_accuracy):
            writer.add_scalar(f"accuracy/node_{i}", value, record.epoch)
        writer.add_scalar("accuracy/ensemble", record.ensemble_accuracy, record.epoch)
        writer.flush()


def summarise(history: Sequence[EpochRecord], eval_split: str, dataset: str, spec: GraphSpec,
              stopped_early: bool) -> FinalMetrics:
    """The final metrics of a run: the last epoch's accuracies and, on the validation split only, the evaluated
    epoch where the ensemble was most accurate (on the test split that choice would select on test)."""
    last = history[-1]
    best = {}
    if eval_split == "val":
        chosen = max((record for record in history if record.evaluated), key=lambda record: record.ensemble_accuracy)
        best = {"best_epoch": chosen.epoch, "best_ensemble_accuracy": chosen.ensemble_accuracy}
    return FinalMetrics(dataset=dataset, split=eval_split, graph=spec.name, epochs=last.epoch,
                        stopped_early=stopped_early, node_accuracy=last.node_accuracy,
                        ensemble_accuracy=last.ensemble_accuracy,
                        mean_node_accuracy=sum(last.node_accuracy) / len(last.node_accuracy), **best)
