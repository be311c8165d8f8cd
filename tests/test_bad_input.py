"""Hostile input, case by case (issue #30): each gives one ``ktg: error:`` line and exit 2, or is handled
correctly, and a refused command changes no file. tests/test_fuzz.py looks for the next such case at random."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
from PIL import Image
from tiny_runs import narrow

from ktg.cli import main
from ktg.config import TrainConfig
from ktg.data import load_dataset
from ktg.data.cache import decode_resized
from ktg.graph import dml
from ktg.train import train

#: Options that make any `ktg train` of these tests a second's work: 2 narrow nodes, 1 epoch on 16-pixel data.
SYNTHETIC = ["--dataset", "synthetic", "--image-size", "16", "--dataset-option", "train_size=16",
             "--dataset-option", "test_size=8"]
ONE_EPOCH = ["--epochs", "1", "--batch-size", "8", "--device", "cpu", "--no-progress"]
TINY_TRAIN = ["--graph", "independent", "--nodes", "2", "--width", "2", *SYNTHETIC, *ONE_EPOCH]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its content."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def refused(argv: list[str], capsys, match: str) -> str:
    """Run ``ktg ARGV``; assert it exits 2 with one error line, its last, that contains ``match``; return it."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ktg: error: ") and sum("error" in line for line in err) == 1, err
    assert match in err[-1], err[-1]
    return err[-1]


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory) -> Path:
    """A run of 3 epochs that stopped after its first (a callback stopped it): 2 narrow nodes on synthetic data."""
    run = tmp_path_factory.mktemp("stopped")
    data = load_dataset("synthetic", image_size=16, train_size=16, test_size=8, num_classes=3)
    train(narrow(dml(2)), data, TrainConfig(epochs=3, batch_size=8, device="cpu"), run,
          callback=lambda epoch, record: True, progress=False)
    return run


# -- a run's weights destroyed --------------------------------------------------------------------------------

def test_export_over_a_runs_checkpoint_is_refused_and_the_run_is_unchanged(stopped_run, capsys):
    before = snapshot(stopped_run)
    refused(["export", "--run", str(stopped_run), "--format", "torchscript", "--out",
             str(stopped_run / "checkpoint.pt")], capsys, "lies in the run folder")
    assert snapshot(stopped_run) == before


@pytest.mark.parametrize("command", [
    ["predict", "--run", "{run}", "{image}", "--out", "{run}/predictions.csv"],
    ["graph", "show", "{run}", "--out", "{run}/graph.txt"],
    ["attention", "--run", "{run}", "--out", "{run}/metrics.png"],
    ["train", *TINY_TRAIN, "--out", "{run}/inner"],
])
def test_no_command_writes_into_a_run_folder_but_its_own_file(stopped_run, tmp_path, capsys, command):
    image = tmp_path / "x.png"
    Image.new("RGB", (16, 16)).save(image)
    before = snapshot(stopped_run)
    refused([part.format(run=stopped_run, image=image) for part in command], capsys, "lies in the run folder")
    assert snapshot(stopped_run) == before


# -- images of any mode -----------------------------------------------------------------------------------------

def test_a_16_bit_image_is_scaled_to_8_bits_not_whitened(tmp_path):
    levels = np.linspace(0, 65535, 16 * 16).reshape(16, 16).astype(np.uint16)
    Image.fromarray(levels).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    pixels, _ = decode_resized(tmp_path / "deep.png", 16)
    # the ramp from black to white keeps its levels: a mean near the middle, not near white (clipping at 255)
    assert abs(float(pixels.mean()) - 127.5) < 3
    assert (pixels == 255).mean() < 0.05


# -- tracebacks for user input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("content, match", [
    (b'{"format": "ktg.graph", "name": "caf\xe9"}', "is not text in UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "nests its lists and objects too deeply"),
])
def test_a_graph_file_ktg_cannot_read_is_one_line(tmp_path, capsys, content, match):
    graph = tmp_path / "graph.json"
    graph.write_bytes(content)
    refused(["graph", "show", str(graph)], capsys, match)


def graph_file(folder: Path, **changes) -> Path:
    """A valid 2-node DML graph file with ``changes`` applied to its top level and ``node`` (to node 0)."""
    data = dml(2).to_dict()
    data["nodes"][0]["options"].update(changes.pop("node", {}))
    data.update(changes)
    path = folder / "graph.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("node, match", [
    ({"base_width": "wide"}, "nodes[0].options.base_width: expected an integer, got str 'wide'"),
    ({"attention_residual": 1}, "nodes[0].options.attention_residual: expected true or false"),
    ({"base_width": 0}, "nodes[0].options.base_width: must be at least 1"),
    ({"colour": "red"}, "takes no option 'colour'"),
])
def test_a_node_option_of_the_wrong_name_or_type_is_one_line_before_a_model_is_built(tmp_path, capsys, node, match):
    path = graph_file(tmp_path, node=node)
    refused(["train", *SYNTHETIC, *ONE_EPOCH, "--graph", str(path), "--out", str(tmp_path / "run")], capsys, match)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("option, value, match", [
    ("--momentum", "-1", "--momentum must be a number in [0, 1), got -1.0"),
    ("--momentum", "nan", "--momentum must be a number in [0, 1)"),
    ("--lr", "inf", "--lr must be a number above 0, got inf"),
    ("--weight-decay", "-0.1", "--weight-decay must be a number ≥ 0"),
    ("--seed", "-1", "--seed must be an integer in 0"),
    ("--holdout", "1", "--holdout must be a number in (0, 1)"),
    ("--image-size", "0", "--image-size must be at least 1, got 0"),
    ("--data-root", "somewhere", "dataset 'synthetic' is built in and reads no folder"),
    ("--gamma", "0.5", "--gamma 0.5: --schedule cosine has no steps"),
    ("--holdout-seed", "3", "--holdout-seed 3 needs --holdout"),
])
def test_an_option_out_of_range_or_without_its_partner_is_one_line(tmp_path, capsys, option, value, match):
    refused(["train", *TINY_TRAIN, option, value, "--out", str(tmp_path / "run")], capsys, match)
    assert not (tmp_path / "run").exists()


def test_channels_last_on_the_cpu_is_one_line_not_a_crashed_process(tmp_path, capsys):
    # found by tests/test_fuzz.py: PyTorch's CPU backward of a strided 1×1 convolution corrupted the heap
    refused(["train", *TINY_TRAIN, "--channels-last", "--out", str(tmp_path / "run")], capsys,
            "--channels-last is for CUDA")
    assert not (tmp_path / "run").exists()


def test_a_dataset_option_of_the_wrong_type_is_one_line(tmp_path, capsys):
    # found by tests/test_fuzz.py: seed=x reached torch.manual_seed
    refused(["train", *TINY_TRAIN, "--dataset-option", "seed=x", "--out", str(tmp_path / "run")], capsys,
            "the dataset option seed of 'synthetic' must be an integer, got 'x'")


@pytest.mark.parametrize("key", ["\r", "\n", "\x85", "\u2028"])
def test_an_error_that_names_a_key_with_a_line_break_stays_one_line(tmp_path, capsys, key):
    # found by tests/test_fuzz.py: an unknown graph field named "\r" split the error line in two
    path = graph_file(tmp_path, **{key: 1})
    line = refused(["graph", "show", str(path)], capsys, "unknown field(s)")
    assert repr(key)[1:-1] in line


def test_nesterov_without_momentum_is_one_line(tmp_path, capsys):
    refused(["train", *TINY_TRAIN, "--nesterov", "--momentum", "0", "--out", str(tmp_path / "run")], capsys,
            "--nesterov needs a --momentum above 0")


# -- nonsense accepted -----------------------------------------------------------------------------------------

def test_an_image_folder_with_one_class_is_one_line(tmp_path, capsys):
    for split in ("train", "test"):
        for index in range(3):
            path = tmp_path / "data" / split / "only" / f"{index}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (index * 40, 0, 0)).save(path)
    refused(["train", "--graph", "independent", "--nodes", "2", "--width", "2", *ONE_EPOCH, "--dataset",
             "imagefolder", "--data-root", str(tmp_path / "data"), "--image-size", "16", "--cache-dir",
             str(tmp_path / "cache"), "--out", str(tmp_path / "run")], capsys,
            "has 1 class(es) (only); a classifier needs at least two")


@pytest.mark.parametrize("where", ["graph", "edge"])
def test_a_temperature_that_is_not_finite_is_refused_with_the_graph(tmp_path, capsys, where):
    data = json.loads(graph_file(tmp_path).read_text())
    if where == "graph":
        data["temperature"] = float("nan")
    else:
        data["edges"][0]["temperature"] = float("inf")
    (tmp_path / "graph.json").write_text(json.dumps(data))  # json writes NaN and Infinity, as Python reads them
    refused(["graph", "show", str(tmp_path / "graph.json")], capsys, "temperature: must be a positive number")


def test_a_non_finite_first_epoch_claims_no_checkpoint(tmp_path, capsys):
    assert main(["train", *TINY_TRAIN, "--lr", "1e30", "--out", str(tmp_path / "run")]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "non-finite loss in epoch 1" in line and "no epoch had finished, so no checkpoint exists" in line
    assert "last good epoch" not in line


def test_predict_and_export_of_an_unfinished_run_name_the_epoch_they_use(stopped_run, tmp_path, capsys):
    image = tmp_path / "x.png"
    Image.new("RGB", (16, 16), (200, 10, 10)).save(image)
    assert main(["predict", "--run", str(stopped_run), str(image), "--device", "cpu", "--no-progress"]) == 0
    assert "predicts with the weights of epoch 1 of 3" in capsys.readouterr().err
    out = tmp_path / "model.pt"
    assert main(["export", "--run", str(stopped_run), "--format", "torchscript", "--out", str(out)]) == 0
    assert "exported the weights of epoch 1 of 3" in capsys.readouterr().err
    assert json.loads(Path(f"{out}.json").read_text())["epochs"] == 3


# -- a refused command that changed saved state ---------------------------------------------------------------

def test_joining_a_search_folder_with_other_nodes_is_refused_before_the_storage_is_touched(tmp_path, capsys):
    out = tmp_path / "search"
    (out / "trials" / "0").mkdir(parents=True)
    (out / "trials" / "0" / "graph.json").write_text("{}")
    optuna.create_study(storage=f"sqlite:///{out / 'study.db'}", study_name="synthetic-3nodes")
    before = snapshot(out)
    refused(["search", *SYNTHETIC, *ONE_EPOCH, "--width", "2", "--nodes", "2", "--trials", "1", "--crop-sizes", "3",
             "--out", str(out)],
            capsys, "has no trials: they belong to another study")
    assert snapshot(out) == before
    summaries = optuna.get_all_study_summaries(storage=f"sqlite:///{out / 'study.db'}")
    assert [summary.study_name for summary in summaries] == ["synthetic-3nodes"]
