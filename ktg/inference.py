"""Use a trained graph: a run folder loaded as one module that answers as the trained ensemble (the one
``load_run``), and the predictions ``ktg predict`` prints for image files.

>>> import ktg
>>> model = ktg.load_run("runs/cub-best", device="cuda")        # eval mode, weights of the last checkpoint
>>> inputs = model.transform(["a.jpg", "b.png"], device="cuda")  # the run's own evaluation pipeline
>>> probabilities = model(inputs).softmax(dim=1)                 # the ensemble node: B×C
>>> out = model.outputs(inputs)                                  # plus every node's logits and attention maps

The ensemble's logits are the mean of its member nodes' perception logits, as in training and ``ktg eval``
(docs/method.md#ensemble-node); the other rules of ``ktg eval`` (soft and hard voting, power means) are
available through :func:`predict_images`. The module computes through :func:`ktg.engine.graph_outputs`, the
evaluation every ktg command uses: float32 in evaluation mode (docs/method.md#evaluation-precision).
"""

from __future__ import annotations

import glob
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from ktg.config import EVAL_BATCH_SIZE
from ktg.data import DataSource
from ktg.data.preprocess import ImageInput, Preprocessing, UnreadableImageError
from ktg.engine import GraphOutputs, KnowledgeTransferGraph, build_graph, graph_outputs
from ktg.ensemble import ENSEMBLE_RULES, check_power
from ktg.errors import KTGError
from ktg.progress import Progress
from ktg.run_folder import RunFolder
from ktg.runtime import resolve_device


class TrainedGraph(nn.Module):
    """A trained knowledge transfer graph as one classifier, in evaluation mode.

    ``forward`` takes a float B×3×S×S batch (what :attr:`transform` makes of images) and returns the
    ensemble's B×C logits; :meth:`outputs` adds every node's logits and attention maps. Both compute as every
    evaluation in ktg does (:func:`ktg.engine.graph_outputs`: evaluation mode, float32).

    Attributes:
        graph: the trained :class:`~ktg.engine.KnowledgeTransferGraph` (its nodes hold the weights).
        classes: class names, index = class.
        transform: the run's evaluation pipeline (:class:`~ktg.data.preprocess.Preprocessing`): files, PIL
            images or uint8 tensors → model inputs, exactly as ``ktg eval`` prepared the test images.
        image_size: S, the side of the model's input.
        source: how to load the run's dataset again (``source.load()``; ``ktg eval`` reads its splits so).
        dataset: the name of the dataset the run was trained on.
        epoch: the checkpoint's epoch.
        epochs: the epochs the run was to train (more than ``epoch`` when it stopped early or its last
            checkpoint could not be read); None where unknown.
    """

    def __init__(self, graph: KnowledgeTransferGraph, classes: Sequence[str], source: DataSource, image_size: int,
                 *, epoch: int, epochs: int | None = None) -> None:
        super().__init__()
        self.graph = graph
        self.classes = list(classes)
        self.source = source
        self.transform = source.preprocessing()
        self.image_size = image_size
        self.dataset = source.name
        self.epoch = epoch
        self.epochs = epochs
        self.eval()

    @property
    def unfinished(self) -> str | None:
        """:func:`unfinished_weights` of these weights: None when they are the run's last epoch's."""
        return unfinished_weights(self.epoch, self.epochs)

    @property
    def members(self) -> tuple[int, ...]:
        """The nodes whose mean is the ensemble (frozen teachers outside the ensemble are left out)."""
        return tuple(self.graph.spec.members)

    @property
    def num_nodes(self) -> int:
        return self.graph.spec.num_nodes

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def outputs(self, inputs: torch.Tensor) -> GraphOutputs:
        """The ensemble's logits, every node's logits and every node's attention map for a B×3×S×S batch."""
        return graph_outputs(self.graph, inputs)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """The ensemble's B×C logits for a float B×3×S×S batch."""
        return self.outputs(inputs).logits


def unfinished_weights(epoch: int, epochs: int | None) -> str | None:
    """What a command that uses the weights of ``epoch`` of a run of ``epochs`` says when they are not the last
    epoch's: ``the weights of epoch 1 of 3 (the run stopped early or its later checkpoint is unreadable)``;
    None when they are (or ``epochs`` is unknown)."""
    if epochs is None or epoch >= epochs:
        return None
    return f"the weights of epoch {epoch} of {epochs} (the run stopped early or its later checkpoint is unreadable)"


def load_run(run_dir: str | Path, device: torch.device | str = "cpu") -> TrainedGraph:
    """The trained graph of a run folder as a :class:`TrainedGraph` in evaluation mode on ``device`` (``"auto"``:
    CUDA when available), with the weights of its latest readable checkpoint. Every command that reads a run's
    weights loads it here (``ktg.load_run``)."""
    run = RunFolder(run_dir)
    run.check_is_run()
    config = run.read_config()
    state = run.load_checkpoint()
    # The checkpoint holds every weight: the files the nodes started from are neither read nor needed.
    graph = build_graph(run.read_graph(), config.num_classes, config.image_size, initial_weights=False)
    graph.load_state_dict(state.model)
    torch_device = resolve_device(device) if isinstance(device, str) else device
    return TrainedGraph(graph, config.classes, config.data, config.image_size, epoch=state.epoch,
                        epochs=config.train.epochs).to(torch_device)


def preprocess(images: Sequence[ImageInput] | ImageInput, run: TrainedGraph | str | Path,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """Model inputs of ``images`` (paths, PIL images, uint8 tensors) by the evaluation pipeline of ``run`` (a
    loaded graph, or a run folder: then only its config.json is read, no weights)."""
    if isinstance(run, TrainedGraph):
        return run.transform(images, device=device)
    return RunFolder(run).read_config().data.preprocessing()(images, device=device)


# -- predicting files ---------------------------------------------------------------------------------


def find_images(arguments: Sequence[str | os.PathLike]) -> tuple[list[Path], list[UnreadableImageError]]:
    """The image files that ``arguments`` name, in order and each once: files as given, folders' image files
    (by suffix, recursively, hidden ones left out, sorted) and glob patterns' matches (``**`` recursive). A
    path that does not exist, a pattern that matches nothing or a folder without images is returned as an
    error naming it."""
    from ktg.data.finegrained import IMAGE_EXTENSIONS

    found: dict[Path, None] = {}
    problems: list[UnreadableImageError] = []
    for argument in arguments:
        path = Path(argument)
        if path.exists() or not glob.has_magic(str(argument)):
            matches = [path]
        else:
            matches = [Path(match) for match in sorted(glob.glob(str(argument), recursive=True))]
            if not matches:
                problems.append(UnreadableImageError(str(argument), "no file matches this pattern"))
        for match in matches:
            if match.is_dir():
                images = sorted(file for file in match.rglob("*") if file.suffix.lower() in IMAGE_EXTENSIONS
                                and file.is_file() and not any(part.startswith(".")
                                                               for part in file.relative_to(match).parts))
                if not images:
                    problems.append(UnreadableImageError(str(match), "a folder without images "
                                                         f"({', '.join(IMAGE_EXTENSIONS)})"))
                found.update(dict.fromkeys(images))
            elif match.exists():
                found[match] = None
            else:
                problems.append(UnreadableImageError(str(match), "no such file or folder"))
    return list(found), problems


@dataclass
class Prediction:
    """What the graph says about one image.

    Attributes:
        name: the image's path (or its name).
        scores: C scores of the chosen ensemble rule (a distribution: probabilities for the mean rules).
        node_probabilities: N×C softmax of every node's logits.
    """

    name: str
    scores: torch.Tensor
    node_probabilities: torch.Tensor

    def top(self, k: int, classes: Sequence[str], node: int | None = None) -> list[tuple[str, float]]:
        """The ``k`` best (class name, score) of the ensemble, or of ``node``."""
        values = self.scores if node is None else self.node_probabilities[node]
        best = values.topk(min(k, len(values)))
        return [(classes[i], float(p)) for p, i in zip(best.values.tolist(), best.indices.tolist())]


#: Called with every decoded batch: (uint8 B×3×s×s squares, original sizes B×2, names) — e.g. to draw it.
BatchCallback = Callable[[torch.Tensor, torch.Tensor, list[str]], None]


def predict_images(
    model: TrainedGraph,
    paths: Sequence[str | os.PathLike],
    *,
    rule: str = "mean_logits",
    power: float = 1.0,
    batch_size: int = EVAL_BATCH_SIZE,
    progress: bool = False,
    on_batch: BatchCallback | None = None,
) -> tuple[list[Prediction], list[UnreadableImageError]]:
    """Classify image files in batches on the model's device: (predictions of the readable files in order,
    errors of the unreadable ones, each naming its file). ``progress``: a bar on a terminal (nothing in a log).

    The images go through the run's evaluation pipeline and :meth:`TrainedGraph.outputs`, exactly as ``ktg eval``
    evaluates them; ``rule`` is one of :data:`~ktg.ensemble.ENSEMBLE_RULES` (``power``: the power mean's exponent).
    """
    if rule not in ENSEMBLE_RULES:
        raise KTGError(f"unknown ensemble rule {rule!r}; choose one of: {', '.join(ENSEMBLE_RULES)}")
    if rule == "power_mean":
        check_power(power)
    if batch_size < 1:
        raise KTGError(f"the batch size must be a positive integer, got {batch_size}")
    device = model.device
    predictions: list[Prediction] = []
    errors: list[UnreadableImageError] = []
    with Progress(len(paths), desc="predict", unit="img", enabled=progress) as bar:
        for names, pixels, sizes, failed in _decoded_batches(model.transform, paths, batch_size):
            errors += failed
            if names:
                if on_batch is not None:
                    on_batch(pixels, sizes, names)
                with torch.no_grad():
                    node_logits = model.outputs(model.transform.apply(pixels.to(device), sizes)).node_logits
                scores = ENSEMBLE_RULES[rule](node_logits[list(model.members)], power).cpu()
                probabilities = node_logits.softmax(dim=2).transpose(0, 1).cpu()
                predictions += [Prediction(name, s, p) for name, s, p in zip(names, scores, probabilities)]
            bar.advance(len(predictions) + len(errors))
    return predictions, errors


def _decoded_batches(
    transform: Preprocessing, paths: Sequence[str | os.PathLike], batch_size: int
) -> Iterator[tuple[list[str], torch.Tensor, torch.Tensor, list[UnreadableImageError]]]:
    """(names, uint8 squares, original sizes, errors) per batch of ``paths``, decoded by threads (PIL releases
    the GIL while decoding); the next batch is decoded while the caller works on this one."""

    def decode(path: str | os.PathLike):
        try:
            return transform.decode(path)
        except UnreadableImageError as error:
            return error

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        chunks = [paths[start:start + batch_size] for start in range(0, len(paths), batch_size)]
        pending = pool.map(decode, chunks[0]) if chunks else None
        for index, chunk in enumerate(chunks):
            results = list(pending)
            if index + 1 < len(chunks):
                pending = pool.map(decode, chunks[index + 1])
            good = [(str(path), result) for path, result in zip(chunk, results) if not isinstance(result, Exception)]
            failed = [result for result in results if isinstance(result, Exception)]
            pixels, sizes = transform.collate([decoded for _, decoded in good]) if good else (None, None)
            yield [name for name, _ in good], pixels, sizes, failed
