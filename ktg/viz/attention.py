"""Where each node looks: attention maps overlaid on the images every node saw.

:func:`attention_grid` draws one row per image and one column per node (after a column with the plain input,
and before one for the ensemble node, whose map is the mean of the nodes' maps, SPEC §1). Each map is
upsampled bilinearly to the model's input and laid over it with a colour map; each cell's title says the
node's prediction and whether it is right. :func:`attention_grid_for_run` does the same for a saved run, and
:func:`log_attention_grid` puts the grid into a run's TensorBoard log at the end of training.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from ktg.data import ImageSet, load_from_source
from ktg.data.transforms import BatchTransform, Identity, Normalize
from ktg.engine import KnowledgeTransferGraph, ensemble_logits
from ktg.errors import KTGError

log = logging.getLogger(__name__)

#: Width and height in inches of one cell (image plus its two-line title).
CELL_SIZE = (1.6, 1.95)
_TITLE_INCHES = 0.35
_RIGHT, _WRONG = "#1B7F3B", "#C0392B"


@torch.no_grad()
def node_attention(graph: KnowledgeTransferGraph, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every node's perception logits and attention map on a batch of model inputs (B×3×S×S float).

    Returns (N×B×C logits, N×B×S×S maps in [0, 1] upsampled bilinearly to the input), on the CPU.
    The graph is evaluated in eval mode and left in the mode it was in.
    """
    was_training = graph.training
    graph.eval()
    try:
        device = next(graph.parameters()).device
        outputs = graph(inputs.to(device))
    finally:
        graph.train(was_training)
    logits = torch.stack([out.logits.float() for out in outputs]).cpu()
    maps = torch.cat([out.attention.float() for out in outputs], dim=1)  # B×N×h×w
    maps = F.interpolate(maps, size=inputs.shape[-2:], mode="bilinear", align_corners=False).clamp(0, 1)
    return logits, maps.transpose(0, 1).cpu()


def _display_transform(transform: BatchTransform) -> BatchTransform:
    # What the model saw, before any mean/std normalisation, so that the picture has its real colours.
    return transform.transform if isinstance(transform, Normalize) else transform


def _short(name: str, limit: int = 12) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def attention_grid(
    graph: KnowledgeTransferGraph,
    images: torch.Tensor,
    labels: torch.Tensor | Sequence[int],
    classes: Sequence[str],
    *,
    transform: BatchTransform | None = None,
    original_sizes: torch.Tensor | None = None,
    show_input: bool = True,
    show_ensemble: bool = True,
    alpha: float = 0.5,
    cmap: str = "jet",
    dpi: int = 100,
    row_names: Sequence[str] | None = None,
) -> Figure:
    """A figure of every node's attention on the same images: rows = images, columns = nodes.

    Args:
        graph: a trained graph (any device; it runs there in eval mode, without gradients).
        images: B×3×H×W uint8 images, as stored in an :class:`~ktg.data.ImageSet`.
        labels: B true class indices.
        classes: class names, index = label.
        transform: the dataset's evaluation transform (uint8 → model input); default: pixels / 255.
        original_sizes: B×2 (h, w) of the images before caching (:attr:`ImageSet.original_sizes`), for
            transforms that crop in original coordinates.
        show_input: a first column with the plain input image and its true class.
        show_ensemble: a last column for the ensemble node (mean logits, mean map).
        alpha: opacity of the attention overlay; cmap: its matplotlib colour map (0 blue … 1 red for ``jet``).
        dpi: resolution; the figure is columns × 1.6 by rows × 1.95 inches (:data:`CELL_SIZE`).
        row_names: a short name per image (e.g. its index in the split), shown in the input column.
    """
    transform = transform or Identity()
    labels = torch.as_tensor(labels).cpu()
    if images.dim() != 4 or images.dtype != torch.uint8 or len(labels) != images.shape[0] or images.shape[0] == 0:
        raise ValueError(f"expected B×3×H×W uint8 images with B ≥ 1 labels, got {tuple(images.shape)} "
                         f"{images.dtype} and {len(labels)} labels")
    inputs = transform(images, original_sizes=original_sizes)
    pictures = _display_transform(transform)(images, original_sizes=original_sizes).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    logits, maps = node_attention(graph, inputs)
    columns = [(f"node {i}", logits[i], maps[i]) for i in range(len(logits))]
    if show_ensemble:
        columns.append(("ensemble", ensemble_logits(logits), maps.mean(dim=0)))

    rows, cols = images.shape[0], len(columns) + show_input
    cell_w, cell_h = CELL_SIZE
    figure = Figure(figsize=(cols * cell_w, rows * cell_h), dpi=dpi)
    pad = 0.06  # inches between cells
    for r in range(rows):
        true = int(labels[r])
        cells = [("input", None, None)] if show_input else []
        for c, (name, node_logits, node_maps) in enumerate(cells + columns):
            axes = figure.add_axes((
                (c * cell_w + pad) / (cols * cell_w),
                1 - ((r + 1) * cell_h - pad) / (rows * cell_h),
                (cell_w - 2 * pad) / (cols * cell_w),
                (cell_h - _TITLE_INCHES - pad) / (rows * cell_h),
            ))
            axes.set_xticks([])
            axes.set_yticks([])
            axes.imshow(pictures[r], interpolation="bilinear")
            if node_logits is None:
                prefix = f"{row_names[r]}: " if row_names is not None else ""
                axes.set_title(f"{prefix}input\ntrue {_short(classes[true])}", fontsize=7, pad=2)
                continue
            axes.imshow(node_maps[r].numpy(), cmap=cmap, alpha=alpha, vmin=0.0, vmax=1.0, interpolation="bilinear")
            predicted = int(node_logits[r].argmax())
            right = predicted == true
            title = f"{name} {'✓' if right else '✗'}\npred {_short(classes[predicted])}"
            if not right:
                title += f" (true {_short(classes[true], 8)})"
            axes.set_title(title, fontsize=7, pad=2, color=_RIGHT if right else _WRONG)
            for spine in axes.spines.values():
                spine.set_edgecolor(_RIGHT if right else _WRONG)
                spine.set_linewidth(1.5)
    return figure


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
    device: str = "cpu",
    **grid_options,
) -> Figure:
    """:func:`attention_grid` of a saved run on ``n`` images of its ``split`` (``test``, ``val``: the held-out
    part of the training split, or ``train``), chosen by ``seed`` (see :func:`choose_images`) or given as
    ``indices`` into the split. Further keyword arguments go to :func:`attention_grid`."""
    from ktg.evaluate import _split_images, load_run
    from ktg.train import resolve_device

    run = Path(run_dir)
    if not run.is_dir():
        raise KTGError(f"run folder {run} does not exist")
    graph, config, _ = load_run(run, resolve_device(device))
    dataset = load_from_source(config["data"])
    split_images = _split_images(dataset, split, run)
    if indices is None:
        chosen = choose_images(len(split_images), n, seed)
    else:
        chosen = torch.as_tensor(list(indices), dtype=torch.long)
        bad = [int(i) for i in chosen if not 0 <= int(i) < len(split_images)]
        if bad or len(chosen) == 0:
            raise KTGError(f"image indices must lie in 0..{len(split_images) - 1} of the {split} split; got {bad or 'none'}")
    subset = split_images.subset(chosen, f"{split_images.name}-attention")
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
