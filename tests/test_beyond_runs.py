"""Each method beyond the papers, as shipped in experiments/beyond/, trains through the CLI.

The chains train on tiny synthetic data to keep the suite fast (their deep teachers dominate the cost); the
graph files, and the chain using every method at once, train on the digits data.
"""

import json
import math
from pathlib import Path

import pytest
import torch

from ktg.chain import load_chain
from ktg.cli import main
from ktg.engine import label_edge_name
from ktg.graph import GraphSpec
from ktg.run_folder import RunFolder

BEYOND = Path(__file__).resolve().parents[1] / "experiments" / "beyond"
COMMON = ["--image-size", "16", "--device", "cpu", "--no-progress"]
# A twentieth of digits' training split for one quick step per epoch; the held-out rest is evaluated. Files
# whose nodes set their own width (hint, all_at_once) keep it: --width may not contradict a node.
DIGITS_AS_FILED = ["--dataset", "digits", "--holdout", "0.95", "--batch-size", "64", *COMMON]
DIGITS = [*DIGITS_AS_FILED, "--width", "4"]
SYNTHETIC = ["--dataset", "synthetic", "--dataset-option", "train_size=32", "--dataset-option", "test_size=16",
             "--dataset-option", "num_classes=4", "--batch-size", "16", "--width", "4", *COMMON]


def run_chain(name, out, data=SYNTHETIC):
    assert main(["chain", str(BEYOND / f"{name}.json"), "--out", str(out), "--epochs", "1", *data]) == 0


def checkpoint(run):
    return RunFolder(run).load_checkpoint().model


def node_weights(run, node):
    """Node ``node``'s weights and BatchNorm statistics in ``run``'s checkpoint, keyed within the node."""
    prefix = f"nodes.{node}."
    return {key[len(prefix):]: value for key, value in checkpoint(run).items() if key.startswith(prefix)}


def final_metrics(run):
    return json.loads((Path(run) / "metrics.json").read_text())


def expected_losses(spec):
    """One logged loss per label edge and per active edge, nothing else."""
    labels = {label_edge_name(t, gate) for t, gate in enumerate(spec.label_gates) if gate != "cutoff"}
    return labels | {edge.label for edge in spec.active_edges}


def test_frozen_teacher_is_copied_and_never_updated(tmp_path):
    run_chain("frozen_teacher", tmp_path)
    teacher, students = checkpoint(tmp_path / "teacher"), checkpoint(tmp_path / "students")
    for key, value in teacher.items():  # weights and BatchNorm statistics of node 0, unchanged by training
        assert torch.equal(students[key], value), key
    spec = GraphSpec.load(tmp_path / "students" / "graph.json")
    assert [node.model for node in spec.nodes] == ["abn_resnet56", "abn_resnet32", "abn_resnet20"]
    final = json.loads((tmp_path / "students" / "metrics.json").read_text())
    assert len(final["node_accuracy"]) == 3


@pytest.mark.parametrize("name, data", [("merit", SYNTHETIC), ("teacher_assistant", SYNTHETIC),
                                        ("ensemble_distillation", SYNTHETIC), ("all_at_once", DIGITS_AS_FILED)])
def test_chains_train_every_stage(tmp_path, name, data, capsys):
    run_chain(name, tmp_path, data)
    stages = [stage["name"] for stage in load_chain(BEYOND / f"{name}.json")["stages"]]
    printed = capsys.readouterr().out
    assert all(stage in printed for stage in stages)
    for stage in stages:
        run = tmp_path / stage
        spec = GraphSpec.load(run / "graph.json")
        record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
        assert set(record["losses"]) == expected_losses(spec), stage  # a frozen node is taught by nothing
        for node, node_spec in enumerate(spec.nodes):
            if not node_spec.frozen:
                continue
            teacher, teacher_node = Path(node_spec.weights["run"]), node_spec.weights["node"]
            assert teacher.parent == tmp_path and teacher.name in stages[:stages.index(stage)]
            copied, original = node_weights(run, node), node_weights(teacher, teacher_node)
            assert copied.keys() == original.keys() and all(torch.equal(copied[k], original[k]) for k in copied)
            # the same weights on the same held-out images: the teacher scores as it did in its own stage
            assert final_metrics(run)["node_accuracy"][node] == final_metrics(teacher)["node_accuracy"][teacher_node]
    if name == "ensemble_distillation":  # the student's ensemble node is the frozen copy of the whole first graph
        assert final_metrics(tmp_path / "student")["ensemble_accuracy"] == final_metrics(tmp_path / "ensemble")[
            "ensemble_accuracy"]
    # running again keeps the finished stages
    run_chain(name, tmp_path, data)
    assert "finished earlier, kept" in capsys.readouterr().out


def test_a_mistake_in_a_later_stage_is_reported_before_the_first_stage_trains(tmp_path, capsys):
    chain = {"format": "ktg.chain", "version": 1, "stages": [
        {"name": "teacher", "graph": "independent", "nodes": 1},
        {"name": "student", "graph": "dml", "nodes": 2, "train": {"lr": -1}}]}
    (tmp_path / "chain.json").write_text(json.dumps(chain))
    out = tmp_path / "out"
    assert main(["chain", str(tmp_path / "chain.json"), "--out", str(out), "--epochs", "1", *SYNTHETIC]) == 2
    assert "--lr must be a number above 0, got -1" in capsys.readouterr().err
    assert not out.exists()


def test_a_width_that_contradicts_a_stage_node_is_refused_before_anything_trains(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["chain", str(BEYOND / "all_at_once.json"), "--out", str(out), *DIGITS]) == 2
    assert "stage 'everything' graph: nodes[2] sets base_width 8 but --width gives 4" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("name, data", [("temperature", DIGITS), ("hint", DIGITS_AS_FILED), ("bagging", DIGITS)])
def test_graph_files_train(tmp_path, name, data):
    graph = BEYOND / f"{name}.json"
    assert main(["train", "--graph", str(graph), "--epochs", "1", "--out", str(tmp_path), *data]) == 0
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    losses = record["losses"]
    spec = GraphSpec.load(tmp_path / "graph.json")
    # one logged loss per label edge and per active edge of the file, nothing else, and they make the total
    assert set(losses) == expected_losses(spec)
    assert all(math.isfinite(value) for value in losses.values())
    assert record["train_loss"] == pytest.approx(sum(losses.values()))
    if name == "hint":
        assert "edge 0→1 hint_mse@layer2/through" in losses


def test_bagging_counts_follow_the_bootstrap(tmp_path):
    assert main(["train", "--graph", str(BEYOND / "bagging.json"), "--epochs", "1", "--out", str(tmp_path),
                 "--dataset", "digits", "--holdout", "0.5", "--batch-size", "64", "--width", "4", *COMMON]) == 0
    bagging = json.loads((tmp_path / "bagging.json").read_text())
    counts = torch.tensor([bagging["counts"][str(node)] for node in range(3)], dtype=torch.float)
    n = counts.shape[1]
    split = json.loads((tmp_path / "split.json").read_text())
    assert n == len(split["train_indices"])
    # Poisson(1): mean 1, variance 1, P(0) = 1/e ≈ 0.368; replicates differ between nodes
    assert counts.mean(dim=1).sub(1).abs().max() < 4 / n**0.5
    assert (counts == 0).float().mean(dim=1).sub(0.3679).abs().max() < 0.06
    assert not torch.equal(counts[0], counts[1])
