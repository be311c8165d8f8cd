"""Evaluate a saved run: every node, the ensemble node, and the other ensemble rules users compare."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ktg.config import EVAL_BATCH_SIZE, EVAL_POWERS
from ktg.data.images import Dataset, ImageSet, check_fingerprint
from ktg.data.loader import BatchLoader
from ktg.ensemble import ENSEMBLE_RULES
from ktg.errors import KTGError
from ktg.inference import load_run
from ktg.run_folder import EvalReport, RunFolder
from ktg.runtime import resolve_device
from ktg.train import predict


def split_images(dataset: Dataset, split: str, run: RunFolder) -> ImageSet:
    """The images of ``split`` (test, train, or the held-out val part saved with the run)."""
    if split == "test":
        return dataset.test
    if split == "train":
        return dataset.train
    saved = run.read_split()
    if saved is None:
        raise KTGError(f"{run.path} was trained without a held-out split (no --holdout); evaluate --split test")
    check_fingerprint(saved.get("fingerprint"), dataset.train, f"the held-out split saved in {run.path}")
    return dataset.train.subset(torch.tensor(saved["val_indices"]), f"{dataset.name}/val")


@dataclass
class SplitLogits:
    """Every node's perception logits on one split of a run's dataset, as ``ktg eval`` computes them.

    Attributes:
        logits: N×M×C (nodes, images in the split's order, classes), float32 on the evaluation device.
        labels: the M true classes.
        members: the nodes the ensemble node averages (a student's frozen teachers are not among them).
        dataset: the dataset's name; epoch: the checkpoint's epoch.
    """

    logits: torch.Tensor
    labels: torch.Tensor
    members: tuple[int, ...]
    dataset: str
    epoch: int


def split_logits(
    run_dir: str | Path, split: str = "test", *, device: str = "auto", batch_size: int = EVAL_BATCH_SIZE,
    progress: bool = False,
) -> SplitLogits:
    """Every node's logits on ``split`` of the run's dataset, through its evaluation transform and the evaluation
    every ktg command uses (:func:`ktg.engine.graph_outputs`: float32, whatever the run trained in)."""
    run = RunFolder(run_dir)
    torch_device = resolve_device(device)
    model = load_run(run.path, torch_device)
    dataset = model.source.load()
    images = split_images(dataset, split, run)
    loader = BatchLoader(images, batch_size, dataset.eval_transform, torch_device, shuffle=False, drop_last=False)
    logits, labels = predict(model.graph, loader, progress=progress)
    return SplitLogits(logits, labels, model.members, dataset.name, model.epoch)


def evaluate_run(
    run_dir: str | Path,
    *,
    split: str = "test",
    device: str = "auto",
    batch_size: int = EVAL_BATCH_SIZE,
    powers: Sequence[float] = EVAL_POWERS,
    progress: bool = True,
) -> EvalReport:
    """Accuracy of every node and of each ensemble rule on ``split`` of the run's dataset.

    Writes ``eval_<split>.json`` into the run folder (:meth:`~ktg.run_folder.RunFolder.eval_report_file`) and
    returns the same report.
    """
    run = RunFolder(run_dir)
    result = split_logits(run.path, split, device=device, batch_size=batch_size, progress=progress)
    logits, labels = result.logits, result.labels

    def accuracy(scores: torch.Tensor) -> float:
        return (scores.argmax(dim=-1) == labels).float().mean().item()

    members = logits[list(result.members)]
    rules: dict[str, float] = {}
    for name, rule in ENSEMBLE_RULES.items():
        if name == "power_mean":
            for u in powers:
                rules[f"power_mean(u={u:g})"] = accuracy(rule(members, u))
        else:
            rules[name] = accuracy(rule(members, 1.0))
    report = EvalReport(dataset=result.dataset, split=split, num_images=len(labels), epoch=result.epoch,
                        node_accuracy=tuple(accuracy(node_logits) for node_logits in logits), ensemble_accuracy=rules)
    run.write_eval_report(report)
    return report
