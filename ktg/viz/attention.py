"""Where each node looks: attention maps overlaid on the images every node saw.

:func:`attention_grid` draws one row per image and one column per node (after a column with the plain input,
and before one for the ensemble node, whose map is the mean of its members' maps,
``docs/method.md#ensemble-node``). Each map is upsampled bilinearly to the model's input and laid over it with
a colour map; each cell's title says the node's prediction and whether it is right. :func:`attention_grid_for_run`
does the same for a saved run, and :func:`log_attention_grid` puts the grid into a run's TensorBoard log at the
end of training.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import matplotlib
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from ktg.data.images import ImageSet
from ktg.data.packed import PackedImages
from ktg.data.transforms import BatchTransform, Identity, Images, Normalize
from ktg.engine import KnowledgeTransferGraph, ensemble_logits, graph_outputs
from ktg.errors import KTGError
from ktg.evaluate import split_images
from ktg.inference import load_run
from ktg.run_folder import RunFolder
from ktg.viz import FIGURE_DPI

log = logging.getLogger(__name__)

#: Width and height in inches of one cell (image plus its two-line title).
CELL_SIZE = (1.6, 1.95)
_TITLE_INCHES = 0.35
_RIGHT, _WRONG = "#1B7F3B", "#C0392B"


@torch.no_grad()
def node_attention(graph: KnowledgeTransferGraph, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every node's perception logits and attention map on a batch of model inputs (B×3×S×S float).

    Returns (N×B×C logits, N×B×S×S maps in [0, 1] upsampled bilinearly to the input), on the CPU. The graph is
    evaluated as every ktg evaluation evaluates it (:func:`ktg.engine.graph_outputs`) and left in the mode it
    was in.
    """
    was_training = graph.training
    try:
        outputs = graph_outputs(graph, inputs.to(next(graph.parameters()).device))
    finally:
        graph.train(was_training)
    maps = outputs.attention.transpose(0, 1)  # B×N×h×w
    maps = F.interpolate(maps, size=inputs.shape[-2:], mode="bilinear", align_corners=False).clamp(0, 1)
    return outputs.node_logits.cpu(), maps.transpose(0, 1).cpu()


def _display_transform(transform: BatchTransform) -> BatchTransform:
    # What the model saw, before any mean/std normalisation, so that the picture has its real colours.
    return transform.transform if isinstance(transform, Normalize) else transform


def shorten(name: str, limit: int = 12) -> str:
    """``name`` cut to ``limit`` characters, the last one an ellipsis, so that it fits a cell's title."""
    return name if len(name) <= limit else name[: limit - 1] + "…"


def attention_grid(
    graph: KnowledgeTransferGraph,
    images: Images,
    labels: torch.Tensor | Sequence[int] | None,
    classes: Sequence[str],
    *,
    transform: BatchTransform | None = None,
    original_sizes: torch.Tensor | None = None,
    show_input: bool = True,
    show_ensemble: bool = True,
    alpha: float = 0.5,
    cmap: str = "jet",
    dpi: int = FIGURE_DPI,
    row_names: Sequence[str] | None = None,
) -> Figure:
    """A figure of every node's attention on the same images: rows = images, columns = nodes.

    Args:
        graph: a trained graph (any device; it runs there in eval mode, without gradients).
        images: B×3×H×W uint8 images or packed photos, as stored in an :class:`~ktg.data.ImageSet`.
        labels: B true class indices, or None for images of unknown class (then no cell is marked ✓ or ✗).
        classes: class names, index = label.
        transform: the dataset's evaluation transform (uint8 → model input); default: pixels / 255.
        original_sizes: B×2 (h, w) of the images before caching (:attr:`ImageSet.original_sizes`), for
            transforms that crop in original coordinates.
        show_input: a first column with the plain input image and its true class.
        show_ensemble: a last column for the ensemble node (mean logits and mean map of its member nodes).
        alpha: opacity of the attention overlay; cmap: its matplotlib colour map (0 blue … 1 red for ``jet``).
        dpi: resolution; the figure is columns × 1.6 by rows × 1.95 inches (:data:`CELL_SIZE`).
        row_names: a short name per image (e.g. its index in the split), shown in the input column.
    """
    transform = transform or Identity()
    labels = None if labels is None else torch.as_tensor(labels).cpu()
    dense = not isinstance(images, PackedImages)
    if ((dense and (images.dim() != 4 or images.dtype != torch.uint8)) or len(images) == 0
            or (labels is not None and len(labels) != len(images))):
        shape = f"{tuple(images.shape)} {images.dtype}" if dense else f"{len(images)} packed"
        raise ValueError(f"expected B×3×H×W uint8 images with B ≥ 1 labels or none, got {shape} images and "
                         f"{'no' if labels is None else len(labels)} labels")
    logits, maps = node_attention(graph, transform(images, original_sizes=original_sizes))
    pictures = _display_transform(transform)(images, original_sizes=original_sizes).float().clamp(0, 1).cpu()
    columns = [(f"node {i}", logits[i], maps[i]) for i in range(len(logits))]
    if show_ensemble:
        members = list(graph.spec.members)
        columns.append(("ensemble", ensemble_logits(logits[members]), maps[members].mean(dim=0)))

    # The whole grid is composed as one RGB picture at the figure's exact pixel size and shown by a single
    # imshow: far faster to draw than an axes per cell, which matters when every finished run logs one.
    rows, cols = len(images), len(columns) + show_input
    width, height = round(cols * CELL_SIZE[0] * dpi), round(rows * CELL_SIZE[1] * dpi)
    cell_w, cell_h = width / cols, height / rows
    title, pad, frame = round(_TITLE_INCHES * dpi), max(1, round(0.06 * dpi)), max(1, round(0.02 * dpi))
    side = int(min(cell_w - 2 * pad, cell_h - title - pad))
    pictures = F.interpolate(pictures, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
    maps = F.interpolate(torch.stack([m for _, _, m in columns], dim=1), size=(side, side), mode="bilinear",
                         antialias=True, align_corners=False).clamp(0, 1)  # B×columns×side×side
    colours = torch.from_numpy(matplotlib.colormaps[cmap](maps.numpy())[..., :3]).float().permute(0, 1, 4, 2, 3)
    overlays = (1 - alpha) * pictures[:, None] + alpha * colours  # B×columns×3×side×side

    canvas = torch.ones(3, height, width)
    figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    for r in range(rows):
        true = None if labels is None else int(labels[r])
        cells = [("input", None, pictures[r])] if show_input else []
        cells += [(name, node_logits, overlays[r, k]) for k, (name, node_logits, _) in enumerate(columns)]
        for c, (name, node_logits, picture) in enumerate(cells):
            x, y = round(c * cell_w + (cell_w - side) / 2), round(r * cell_h + title)
            if node_logits is None:
                text, colour = f"{row_names[r] + ': ' if row_names is not None else ''}input", None
                text += "" if true is None else f"\ntrue {shorten(classes[true])}"
            elif true is None:
                text, colour = f"{name}\npred {shorten(classes[int(node_logits[r].argmax())])}", None
            else:
                predicted = int(node_logits[r].argmax())
                right = predicted == true
                text = f"{name} {'✓' if right else '✗'}\npred {shorten(classes[predicted])}"
                text += "" if right else f" (true {shorten(classes[true], 8)})"
                colour = _RIGHT if right else _WRONG
                canvas[:, y - frame:y + side + frame, x - frame:x + side + frame] = _rgb(colour)[:, None, None]
            canvas[:, y:y + side, x:x + side] = picture
            figure.text((x + side / 2) / width, 1 - (y - frame - 1) / height, text, ha="center", va="bottom",
                        fontsize=7, color=colour or "black", linespacing=1.1)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_axis_off()
    axes.imshow((canvas * 255).round().to(torch.uint8).permute(1, 2, 0).numpy(), interpolation="none", aspect="auto")
    return figure


def _rgb(colour: str) -> torch.Tensor:
    return torch.tensor(matplotlib.colors.to_rgb(colour))


def choose_images(num_images: int, n: int, seed: int | None) -> torch.Tensor:
    """``n`` distinct indices among ``num_images``, sorted: a seeded random draw, or the first ``n`` when
    ``seed`` is None. Two runs on the same data and seed get the same images."""
    if n < 1:
        raise KTGError(f"the number of images must be at least 1, got {n}")
    n = min(n, num_images)
    if seed is None:
        return torch.arange(n)
    return torch.sort(torch.randperm(num_images, generator=torch.Generator().manual_seed(seed))[:n]).values


def attention_grid_for_run(
    run_dir: str | Path,
    split: str = "test",
    n: int = 8,
    seed: int | None = 0,
    *,
    indices: Sequence[int] | None = None,
    device: str = "auto",
    **grid_options,
) -> Figure:
    """:func:`attention_grid` of a saved run on ``n`` images of its ``split`` (``test``, ``val``: the held-out
    part of the training split, or ``train``), chosen by ``seed`` (see :func:`choose_images`) or given as
    ``indices`` into the split, its nodes on ``device`` (``"auto"``: the GPU if there is one, as
    :func:`~ktg.inference.load_run` says). Further keyword arguments go to :func:`attention_grid`."""
    model = load_run(run_dir, device)
    graph, dataset = model.graph, model.source.load()
    split_set = split_images(dataset, split, RunFolder(run_dir))
    if indices is None:
        chosen = choose_images(len(split_set), n, seed)
    else:
        chosen = torch.as_tensor(list(indices), dtype=torch.long)
        bad = [int(i) for i in chosen if not 0 <= int(i) < len(split_set)]
        if bad or len(chosen) == 0:
            raise KTGError(f"image indices must lie in 0..{len(split_set) - 1} of the {split} split; "
                           f"got {bad or 'none'}")
    subset = split_set.subset(chosen, f"{split_set.name}-attention")
    grid_options.setdefault("row_names", [f"#{int(i)}" for i in chosen])
    return attention_grid(graph, subset.images, subset.labels, subset.classes, transform=dataset.eval_transform,
                          original_sizes=subset.original_sizes, **grid_options)


def log_attention_grid(writer, graph: KnowledgeTransferGraph, images: ImageSet, transform: BatchTransform,
                       step: int, n: int = 8) -> None:
    """Add the attention grid of the first ``n`` of ``images`` to a TensorBoard ``writer`` as ``attention``.

    Called when a run has finished: a failure to draw is logged as a warning and never raised, so a plotting
    problem cannot cost a finished run.
    """
    try:
        first = torch.arange(min(n, len(images)))
        sizes = None if images.original_sizes is None else images.original_sizes[first]
        figure = attention_grid(graph, images.images[first], images.labels[first], images.classes,
                                transform=transform, original_sizes=sizes)
        writer.add_figure("attention", figure, global_step=step)
    except Exception as error:  # drawing is a courtesy at the end of a run; the run's results are already saved
        log.warning("could not log the attention grid to TensorBoard: %s", error)
