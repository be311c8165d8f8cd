"""A fuzzer of the command line (issue #30): random and mutated graph files, random training options and their
combinations, random small images of every Pillow mode. The property is always the same: ``ktg`` exits 0, or
exits 2 with one error line (``ktg: error: …``, or argparse's ``ktg train: error: …``) and no traceback, and
every file that existed before is unchanged.

In the suite each property tries a fixed, small number of examples, the same ones every time (derandomised),
so the file stays within the suite's time budget. ``KTG_FUZZ_EXAMPLES=N`` tries N fresh random examples per
property instead (``KTG_FUZZ_EXAMPLES=2000 pytest tests/test_fuzz.py`` for a long hunt).
"""

from __future__ import annotations

import io
import itertools
import json
import os
import re
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from tiny_runs import narrow

from ktg.cli import main
from ktg.config import TrainConfig
from ktg.data import load_dataset
from ktg.graph import dml, independent
from ktg.train import train

_LONG = int(os.environ.get("KTG_FUZZ_EXAMPLES", "0"))


def fuzz(examples: int):
    """Hypothesis settings: ``examples`` fixed examples in the suite, or $KTG_FUZZ_EXAMPLES fresh ones."""
    return settings(max_examples=_LONG or examples, derandomize=not _LONG, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


ERROR_LINE = re.compile(r"^ktg( [a-z]+)*: error: \S")
#: Each call of :func:`ktg`, so a fresh output folder per example.
_calls = itertools.count()


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its content."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def ktg(argv: list[str], watched: Path) -> int:
    """Run ``ktg ARGV`` in this process and assert the property; returns the exit status."""
    before = snapshot(watched)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            status = main(argv)
        except SystemExit as exit:  # argparse's own errors
            status = exit.code
    text = err.getvalue()
    assert status in (0, 2), (argv, status, text)
    assert "Traceback" not in text, (argv, text)
    if status == 2:
        lines = text.strip().splitlines()
        assert lines and ERROR_LINE.match(lines[-1]), (argv, text)
        assert sum(bool(ERROR_LINE.match(line)) for line in lines) == 1, (argv, text)
    after = snapshot(watched)
    assert {name: after.get(name) for name in before} == before, (argv, "changed a file that existed before")
    return status


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A folder with a run that stopped after epoch 1 of 2 (``run/``) and a valid graph file (``graph.json``);
    every command of the fuzzer writes below it, and none may change a file that was there before."""
    root = tmp_path_factory.mktemp("fuzz")
    data = load_dataset("synthetic", image_size=16, train_size=16, test_size=8, num_classes=3)
    train(narrow(dml(2)), data, TrainConfig(epochs=2, batch_size=8, device="cpu"), root / "run",
          callback=lambda epoch, record: True, progress=False)
    dml(2).save(root / "graph.json")
    return root


# -- graph files ---------------------------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10) | st.integers() | st.floats(allow_nan=True)
    | st.sampled_from(["ktg.graph", "through", "cutoff", "prob_kl", "att_cos", "label", "ensemble", "layer2",
                       "abn_resnet20", "wide", ""]) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["format", "version", "nodes", "edges", "label_gates", "temperature", "crop_sizes",
                         "ensemble", "name", "model", "options", "base_width", "attention_residual", "pretrained",
                         "weights", "frozen", "bagging", "source", "target", "loss", "gate", "stage", "members",
                         "as_source", "file", "run", "node"]) | st.text(max_size=6), inner, max_size=4),
    max_leaves=12)
VALID = [dml(2).to_dict(), independent(3).to_dict(), json.loads((Path(__file__).parents[1] / "docs" /
                                                                 "example_graph.json").read_text())]


@st.composite
def mutated_graph(draw) -> object:
    """A valid graph with a few of its values replaced, deleted or added, anywhere in its tree."""
    data = json.loads(json.dumps(draw(st.sampled_from(VALID))))
    for _ in range(draw(st.integers(1, 3))):
        holder, key = data, None
        while True:  # walk down to a random place
            keys = list(holder) if isinstance(holder, dict) else list(range(len(holder)))
            if not keys:
                break
            key = draw(st.sampled_from(keys))
            if not isinstance(holder[key], (dict, list)) or draw(st.booleans()):
                break
            holder, key = holder[key], None
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if key is None or action == "add":
            if isinstance(holder, dict):
                holder[draw(st.text(max_size=6))] = draw(JSON)
            else:
                holder.append(draw(JSON))
        elif action == "delete":
            del holder[key]
        else:
            holder[key] = draw(JSON)
    return data


@st.composite
def graph_bytes(draw) -> bytes:
    """The bytes of a graph file: random JSON or a mutated graph, in some encoding, or plain random bytes."""
    kind = draw(st.sampled_from(["random", "mutated", "mutated", "bytes", "deep"]))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "deep":
        depth = draw(st.integers(1, 200_000))
        opening, closing = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        return (opening * depth + "1" + closing * depth).encode()
    text = json.dumps(draw(JSON if kind == "random" else mutated_graph()), ensure_ascii=draw(st.booleans()))
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-32", "latin-1"]))
    return text.encode(encoding, errors="replace")


@fuzz(examples=60)
@given(content=graph_bytes(), command=st.sampled_from(["show", "dot"]))
def test_any_graph_file_is_shown_or_refused_in_one_line(world, content, command):
    path = world / "fuzzed" / f"{next(_calls)}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    ktg(["graph", "show", str(path), *(["--format", "dot"] if command == "dot" else [])], world)


@fuzz(examples=6)
@given(options=st.dictionaries(st.sampled_from(["base_width", "attention_residual", "pretrained", "colour"]),
                               JSON, min_size=1, max_size=2))
def test_any_node_options_are_trained_or_refused_in_one_line(world, options):
    data = dml(2).to_dict()
    data["nodes"][1]["options"] = options
    path = world / "fuzzed" / f"{next(_calls)}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(data))
    ktg(["train", "--graph", str(path), *SYNTHETIC, *ONE_EPOCH, "--out", str(world / "out" / str(next(_calls)))],
        world)


# -- options ----------------------------------------------------------------------------------------------------

SYNTHETIC = ["--dataset", "synthetic", "--image-size", "16", "--dataset-option", "train_size=16",
             "--dataset-option", "test_size=8"]
ONE_EPOCH = ["--epochs", "1", "--batch-size", "8", "--device", "cpu", "--no-progress"]

NUMBERS = st.sampled_from(["0", "-1", "1", "0.5", "nan", "inf", "-inf", "1e30", "x", ""]) | st.floats().map(str)
SMALL = st.sampled_from(["-1", "0", "1", "2", "3", "x", "1.5"])
#: Options of ``ktg train`` and values worth trying; values are bounded where a valid one could make the run long
#: (--epochs, --image-size). --compile is left out: a compiled step takes tens of seconds to warm up.
OPTIONS = {
    "--epochs": SMALL, "--batch-size": SMALL | st.just("100000"), "--eval-batch-size": SMALL, "--lr": NUMBERS,
    "--momentum": NUMBERS, "--weight-decay": NUMBERS, "--gamma": NUMBERS, "--holdout": NUMBERS,
    "--seed": SMALL | st.just(str(2**40)), "--holdout-seed": SMALL, "--eval-every": SMALL,
    "--image-size": st.sampled_from(["-1", "0", "1", "4", "8", "24", "x"]), "--nodes": SMALL,
    "--width": SMALL, "--schedule": st.sampled_from(["cosine", "step", "constant", "linear"]),
    "--milestones": st.lists(SMALL, min_size=1, max_size=3).map(" ".join),
    "--model": st.sampled_from(["abn_resnet20", "abn_resnet18", "resnet", ""]),
    "--graph": st.sampled_from(["dml", "independent", "nothing", "{graph}", "{run}", "{run}/checkpoint.pt"]),
    "--device": st.sampled_from(["cpu", "auto", "cuda:7", "tpu"]),
    "--dataset": st.sampled_from(["synthetic", "digits", "imagefolder", "mnist"]),
    "--data-root": st.sampled_from(["{run}", "nowhere"]),
    "--dataset-option": st.sampled_from(["num_classes=1", "num_classes=3", "train_size=0", "train_size=-5",
                                         "colour=red", "train_subset=0.5", "train_subset=2", "seed=x", "=1", "k"]),
    "--recipe": st.sampled_from(["paper", "paper-bf16", "none"]),
    "--out": st.sampled_from(["{new}", "{run}", "{run}/inner", "{run}/checkpoint.pt", "{graph}/run"]),
    "--nesterov": st.just(None), "--no-amp": st.just(None), "--channels-last": st.just(None),
    "--deterministic": st.just(None), "--resume": st.just(None), "--restart": st.just(None),
}


@fuzz(examples=14)
@given(chosen=st.dictionaries(st.sampled_from(sorted(OPTIONS)), st.none(), min_size=1, max_size=3), data=st.data())
def test_any_training_options_train_or_are_refused_in_one_line(world, chosen, data):
    if "--restart" in chosen or "--resume" in chosen:  # these may change the run they are given, by design
        chosen.pop("--out", None)
    argv = ["train", "--graph", "independent", "--nodes", "2", "--width", "2", *SYNTHETIC, *ONE_EPOCH,
            "--out", "{new}"]
    for option in chosen:
        value = data.draw(OPTIONS[option], label=option)
        argv += [option] if value is None else [option, *value.split(" ")]
    names = {"run": str(world / "run"), "graph": str(world / "graph.json"),
             "new": str(world / "out" / str(next(_calls)))}
    ktg([part.format(**names) for part in argv], world)


# -- images of every Pillow mode -----------------------------------------------------------------------------

MODES = ["1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "F", "LA", "La", "PA", "RGBX", "RGBa",
         "I;16", "I;16L", "I;16B", "I;16N"]


@st.composite
def images(draw) -> Image.Image:
    """A small image of any mode with random content (random bytes: any level, NaN and infinity for ``F``)."""
    mode = draw(st.sampled_from(MODES))
    size = (draw(st.integers(1, 24)), draw(st.integers(1, 24)))
    length = len(Image.new(mode, size).tobytes())
    return Image.frombytes(mode, size, draw(st.binary(min_size=length, max_size=length)))


@fuzz(examples=16)
@given(image=images(), suffix=st.sampled_from([".png", ".tiff", ".bmp", ".jpg", ".gif", ".webp"]))
def test_an_image_of_any_mode_is_predicted(world, image, suffix):
    path = world / "images" / f"{next(_calls)}{suffix}"
    path.parent.mkdir(exist_ok=True)
    try:
        image.save(path)
    except (OSError, ValueError, KeyError):  # a format that cannot hold the mode: the image itself, in memory
        path.unlink(missing_ok=True)
        from ktg.inference import load_run

        pixels = load_run(world / "run").transform(image)
        assert pixels.shape == (1, 3, 16, 16) and bool(pixels.isfinite().all())
        return
    status = ktg(["predict", "--run", str(world / "run"), str(path), "--device", "cpu", "--no-progress"], world)
    assert status == 0, f"a {image.mode} image saved as {suffix} could not be read"

