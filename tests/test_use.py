"""Using a trained graph: ktg.load_run, ktg predict and ktg export, on a short digits run and on a run over an
image-folder tree of real photographs."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from tiny_runs import narrow

import ktg
from ktg.cli import main
from ktg.config import TrainConfig
from ktg.data import load_dataset
from ktg.ensemble import ENSEMBLE_RULES
from ktg.evaluate import evaluate_run, split_images, split_logits
from ktg.graph import dml
from ktg.run_folder import RunFolder
from ktg.train import train


def package_file(package: str, relative: str) -> Path:
    """A data file shipped inside an installed package (found without importing the package)."""
    return Path(importlib.util.find_spec(package).origin).parent / relative


#: Real photographs shipped by scikit-learn and scikit-image (427×640, 427×640, 300×451, 400×600).
PHOTOS = {
    "china": package_file("sklearn", "datasets/images/china.jpg"),
    "flower": package_file("sklearn", "datasets/images/flower.jpg"),
    "cat": package_file("skimage", "data/chelsea.png"),
    "coffee": package_file("skimage", "data/coffee.png"),
}


def write_photo_tree(root: Path, train_per_class: int = 5, test_per_class: int = 3) -> Path:
    """``root/{train,test}/<photo>/`` with crops of each photo (varied sizes and aspect ratios, JPEG and PNG);
    a few test images are stored grey, palette with transparency, RGBA or CMYK."""
    rng = np.random.default_rng(0)
    odd_modes = iter(["L", "P", "RGBA", "CMYK"])
    for name, file in PHOTOS.items():
        photo = Image.open(file).convert("RGB")
        for index in range(train_per_class + test_per_class):
            split = "train" if index < train_per_class else "test"
            w, h = (int(side * rng.uniform(0.45, 0.95)) for side in photo.size)
            left, top = int(rng.integers(0, photo.width - w + 1)), int(rng.integers(0, photo.height - h + 1))
            crop = photo.crop((left, top, left + w, top + h))
            mode = next(odd_modes, "RGB") if split == "test" and index == train_per_class else "RGB"
            suffix = "jpg" if mode == "CMYK" or (mode == "RGB" and index % 2) else "png"
            path = root / split / name / f"{index}.{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            image = crop.quantize(32) if mode == "P" else crop.convert(mode)
            image.save(path, **({"transparency": 0} if mode == "P" else {}))
    return root


@pytest.fixture(scope="module")
def photo_run(tmp_path_factory) -> tuple[Path, Path]:
    """(a 2-node DML run of two epochs on crops of four real photos at 32 px, its test folder ``<class>/<file>``)."""
    root = write_photo_tree(tmp_path_factory.mktemp("photos"))
    run = tmp_path_factory.mktemp("photo-run")
    data = load_dataset("imagefolder", root, 32, cache_dir=str(tmp_path_factory.mktemp("cache")), normalize=True)
    train(narrow(dml(2), 32), data, TrainConfig(epochs=2, batch_size=8, device="cpu"), run, progress=False)
    return run, root / "test"


@pytest.fixture(scope="module")
def square_photo_run(tmp_path_factory) -> tuple[Path, Path]:
    """(a 2-node DML run of two epochs on the photo tree at 32 px with augment=pad-crop, its test folder)."""
    root = write_photo_tree(tmp_path_factory.mktemp("photos"))
    run = tmp_path_factory.mktemp("square-photo-run")
    data = load_dataset("imagefolder", root, 32, cache_dir=str(tmp_path_factory.mktemp("cache")), augment="pad-crop")
    train(narrow(dml(2), 32), data, TrainConfig(epochs=2, batch_size=8, device="cpu"), run, progress=False)
    return run, root / "test"


def test_a_run_predicts_with_the_augmentation_recipe_it_was_trained_with(square_photo_run, tmp_path):
    """augment=pad-crop is saved with the run; predict and export prepare images with its evaluation transform
    (the whole photo squashed to 32×32), not the image folder's default centre crop."""
    run, images = square_photo_run
    assert RunFolder(run).read_config().data.options["augment"] == "pad-crop"
    model = ktg.load_run(run)
    files = sorted(path for path in images.rglob("*") if path.is_file())
    whole = torch.stack([TF.resize(TF.to_tensor(Image.open(f).convert("RGB")), [32, 32], antialias=True)
                         for f in files])
    assert (model.transform(files) - whole).abs().mean() < 0.01
    centre = load_dataset("imagefolder", images.parent, 32, cache_dir=str(tmp_path)).eval_transform
    pixels, sizes = model.transform.stack(files)
    assert (centre(pixels, original_sizes=sizes) - whole).abs().mean() > 0.03  # the default would differ
    assert model.transform.describe()["torchvision"] == "transforms.Compose([Resize((32, 32)), ToTensor()])"


def predicted_classes(csv_file: Path) -> dict[str, str]:
    with open(csv_file, newline="", encoding="utf-8") as file:
        return {row["path"]: row["class_1"] for row in csv.DictReader(file)}


@pytest.mark.parametrize("which", ["digits_run", "photo_run", "square_photo_run"])
def test_predict_agrees_with_eval_on_every_test_image(which, request, tmp_path, capsys):
    run, images = request.getfixturevalue(which)
    files = sorted(path for path in images.rglob("*") if path.is_file())  # both trees sort in the split's order
    classes = ktg.load_run(run).classes
    evaluated = split_logits(run, "test", device="cpu")  # what ktg eval computes
    for rule, power in [("mean_logits", 1.0), ("majority_vote", 1.0), ("power_mean", 0.5)]:
        out = tmp_path / f"{rule}.csv"
        exponent = ["--power", str(power)] if rule == "power_mean" else []
        assert main(["predict", "--run", str(run), str(images), "--ensemble", rule, *exponent,
                     "--out", str(out), "--device", "cpu", "--batch-size", "50", "--no-progress"]) == 0
        predicted = predicted_classes(out)
        assert list(predicted) == [str(path) for path in files]
        scores = ENSEMBLE_RULES[rule](evaluated.logits[list(evaluated.members)], power)
        expected = [classes[i] for i in scores.argmax(dim=1).tolist()]
        assert list(predicted.values()) == expected, f"{rule}: predict and eval disagree"
        assert len(set(expected)) > 1, "a run that answers one class for everything would prove nothing"
    # and the accuracy ktg eval reports is what these predictions score
    assert main(["eval", "--run", str(run), "--device", "cpu", "--no-progress", "--power", "0.5"]) == 0
    report = json.loads((run / "eval_test.json").read_text())
    truth = [path.stem.split("-")[1] if which == "digits_run" else path.parent.name for path in files]
    correct = np.mean([p == t for p, t in zip(predicted_classes(tmp_path / "power_mean.csv").values(), truth)])
    assert correct == pytest.approx(report["ensemble_accuracy"]["power_mean(u=0.5)"])
    capsys.readouterr()


@pytest.mark.parametrize("which, split", [("digits_run", "val"), ("photo_run", "test")])
def test_eval_scores_what_the_trainer_recorded_and_the_model_answers_as_eval(which, split, request):
    run, _ = request.getfixturevalue(which)
    final = json.loads((run / "metrics.json").read_text())
    report = evaluate_run(run, split=split, device="cpu", progress=False)
    assert final["split"] == split and report.epoch == final["epochs"]
    assert list(report.node_accuracy) == final["node_accuracy"]
    assert report.ensemble_accuracy["mean_logits"] == final["ensemble_accuracy"]
    assert RunFolder(run).read_eval_report(split) == report  # the file holds what it returned
    model = ktg.load_run(run)
    dataset = model.source.load()
    images = split_images(dataset, split, RunFolder(run))
    inputs = dataset.eval_transform(images.images, original_sizes=images.original_sizes)
    evaluated = split_logits(run, split, device="cpu")
    with torch.no_grad():
        outputs = model.outputs(inputs)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # evaluation is float32 whatever the caller asks
            in_autocast = model(inputs)
    assert torch.allclose(outputs.node_logits, evaluated.logits, atol=1e-5)
    assert in_autocast.dtype == torch.float32 and torch.equal(in_autocast, outputs.logits)


def test_a_run_trained_in_bf16_is_evaluated_in_float32(tmp_path):
    data = load_dataset("synthetic", image_size=16, train_size=32, test_size=16, num_classes=4)
    final = train(narrow(dml(2)), data, TrainConfig(epochs=1, batch_size=16, amp=True, device="cpu"), tmp_path,
                  progress=False)
    assert RunFolder(tmp_path).read_config().train.amp is True
    report = evaluate_run(tmp_path, split="test", device="cpu", progress=False)
    assert report.node_accuracy == final.node_accuracy
    assert report.ensemble_accuracy["mean_logits"] == final.ensemble_accuracy


def test_load_run_is_the_ensemble_as_one_module(digits_run):
    run, images = digits_run
    model = ktg.load_run(run, device="cpu")
    assert isinstance(model, torch.nn.Module) and not model.training and model.classes == [str(d) for d in range(10)]
    files = sorted(images.glob("*.png"))[:5]
    inputs = model.transform(files)
    assert torch.equal(inputs, ktg.preprocess(files, run)) and torch.equal(inputs, ktg.preprocess(files, model))
    with torch.no_grad():
        logits, outputs = model(inputs), model.outputs(inputs)
    assert logits.shape == (5, 10) and outputs.node_logits.shape == (2, 5, 10)
    assert torch.allclose(logits, outputs.node_logits.mean(dim=0))
    assert outputs.attention.shape == (2, 5, 8, 8) and 0 <= outputs.attention.min() <= outputs.attention.max() <= 1
    from_pil = model.transform([Image.open(files[0])])
    assert torch.equal(from_pil, inputs[:1])


def test_predict_prints_the_top_classes_of_the_ensemble_and_of_every_node(digits_run, capsys):
    run, images = digits_run
    file = sorted(images.glob("*.png"))[0]
    assert main(["predict", "--run", str(run), str(file), "--top-k", "3", "--per-node", "--device", "cpu",
                 "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[0].startswith(f"{file}: ")
    assert lines[1].startswith("    node 0: ") and lines[2].startswith("    node 1: ")
    scores = [float(part.split()[-2]) for part in lines[0].split(": ", 1)[1].split(", ")]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True) and sum(scores) <= 100


def test_predict_writes_json_and_an_attention_grid_per_image(digits_run, tmp_path, capsys):
    run, images = digits_run
    files = sorted(images.glob("*-7.png"))[:3]
    out, grids = tmp_path / "predictions.json", tmp_path / "grids"
    assert main(["predict", "--run", str(run), *map(str, files), "--top-k", "2", "--per-node", "--out", str(out),
                 "--attention", str(grids), "--device", "cpu", "--no-progress"]) == 0
    report = json.loads(out.read_text())
    assert report["rule"] == "mean_logits" and [p["path"] for p in report["predictions"]] == list(map(str, files))
    first = report["predictions"][0]
    assert len(first["top"]) == 2 and len(first["nodes"]) == 2 and set(first["top"][0]) == {"class", "score"}
    assert sorted(p.name for p in grids.iterdir()) == [f"{f.name}.png" for f in files]
    height, width = Image.open(grids / f"{files[0].name}.png").size[::-1]
    assert (height, width) == (195, 4 * 160)  # one row; input, two nodes, ensemble
    capsys.readouterr()


def test_attention_grids_of_photos_mirror_the_folders_below_the_inputs(photo_run, tmp_path, capsys):
    run, images = photo_run
    grids = tmp_path / "grids"
    assert main(["predict", "--run", str(run), str(images / "cat"), str(images / "china"), "--attention", str(grids),
                 "--device", "cpu", "--no-progress"]) == 0
    expected = sorted(f"{path.relative_to(images)}.png" for folder in ("cat", "china")
                      for path in (images / folder).iterdir())
    assert sorted(str(path.relative_to(grids)) for path in grids.rglob("*.png")) == expected
    capsys.readouterr()


def test_unreadable_inputs_are_listed_and_skipped_and_the_rest_is_predicted(digits_run, tmp_path, capsys):
    run, images = digits_run
    folder = tmp_path / "mixed"
    folder.mkdir()
    for file in images.glob("*-3.png"):
        shutil.copy(file, folder)
    (folder / "notes.jpg").write_text("not an image")
    whole = folder / sorted(folder.glob("*.png"))[0].name
    Image.open(whole).convert("RGB").save(tmp_path / "whole.jpg")
    (folder / "cut.jpg").write_bytes((tmp_path / "whole.jpg").read_bytes()[:200])
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out.csv"
    status = main(["predict", "--run", str(run), str(folder), str(tmp_path / "empty"), str(tmp_path / "gone.png"),
                   str(tmp_path / "nothing-*.png"), "--out", str(out), "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err.splitlines()
    assert status == 2
    skipped = {line.removeprefix("ktg: skipped ").split(": ")[0]: line for line in err[:-1]}
    assert set(skipped) == {str(folder / "notes.jpg"), str(folder / "cut.jpg"), str(tmp_path / "empty"),
                            str(tmp_path / "gone.png"), str(tmp_path / "nothing-*.png")}
    assert err[-1].startswith("ktg: error: 5 input(s) could not be read and were skipped")
    assert len(predicted_classes(out)) == len(list(images.glob("*-3.png")))


@pytest.mark.parametrize("argv, message", [
    (["--run", "{run}", "{empty}"], "no images to classify: {empty}: a folder without images"),
    (["--run", "{no_checkpoint}", "{image}"], "is not a ktg run folder: checkpoint.pt is missing"),
    (["--run", "{run}", "{image}", "--out", "x.txt"], "must end in .csv or .json"),
    (["--run", "{run}", "{image}", "--top-k", "0"], "--top-k must be at least 1"),
    (["--run", "{run}", "{image}", "--out", "{image}/p.csv"],
     "cannot write the predictions file --out {image}: {image} is a file, not a folder"),
    (["--run", "{run}", "{image}", "--attention", "{image}/grids"],
     "cannot write the attention folder --attention {image}/grids: {image} is a file, not a folder"),
])
def test_bad_predict_input_is_one_line(digits_run, tmp_path, capsys, argv, message):
    run, images = digits_run
    (tmp_path / "empty").mkdir()
    (tmp_path / "run").mkdir()
    for name in ("graph.json", "config.json"):
        shutil.copy(run / name, tmp_path / "run" / name)
    values = {"run": run, "empty": tmp_path / "empty", "no_checkpoint": tmp_path / "run",
              "image": sorted(images.glob("*.png"))[0]}
    assert main(["predict", *[part.format(**values) for part in argv], "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message.format(**values) in err and "Traceback" not in err


def test_a_power_that_is_not_positive_is_one_line_before_any_work(digits_run, capsys):
    run, images = digits_run
    assert main(["predict", "--run", str(run), str(sorted(images.glob("*.png"))[0]), "--ensemble", "power_mean",
                 "--power", "-1", "--device", "cpu", "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "ktg: error: the power-mean exponent must be positive, got -1\n" and not captured.out


def run_exported(fmt: str, path: Path, inputs: torch.Tensor) -> list[torch.Tensor]:
    """The exported model's outputs, run the way a deployer would (without ktg)."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return [torch.from_numpy(value) for value in session.run(None, {"input": inputs.numpy()})]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, TorchScript files still load
        return list(torch.jit.load(str(path))(inputs))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_pytorch_on_another_batch_size(fmt, digits_run, tmp_path, capsys):
    run, images = digits_run
    out = tmp_path / f"model.{'onnx' if fmt == 'onnx' else 'pt'}"
    assert main(["export", "--run", str(run), "--format", fmt, "--out", str(out), "--node-logits",
                 "--attention"]) == 0
    assert "largest difference to PyTorch" in capsys.readouterr().out
    description = json.loads(Path(f"{out}.json").read_text())
    assert description["classes"] == [str(d) for d in range(10)]
    assert description["input"]["shape"] == ["batch", 3, 16, 16]
    assert [o["name"] for o in description["outputs"]] == ["logits", "node_logits", "attention"]
    assert description["preprocessing"]["summary"] == "RGB, resize to 16×16 (bilinear), divide by 255 (N×3×H×W, RGB)"
    assert description["verified"]["batch_size"] != description["verified"]["traced_batch_size"]

    model = ktg.load_run(run)
    inputs = model.transform(sorted(images.glob("*.png"))[:5])  # 5: neither the traced nor the checked size
    with torch.no_grad():
        expected = model.outputs(inputs)
    for got, want in zip(run_exported(fmt, out, inputs), expected):
        assert got.shape == want.shape and float((got - want).abs().max()) <= 1e-4


def test_an_export_that_fails_its_check_leaves_no_file(digits_run, tmp_path, capsys):
    run, _ = digits_run
    out = tmp_path / "model.onnx"
    # ONNX Runtime's kernels round differently from PyTorch's: no export matches to zero
    assert main(["export", "--run", str(run), "--format", "onnx", "--out", str(out), "--tolerance", "0"]) == 2
    err = capsys.readouterr().err
    assert "differs from PyTorch by up to" in err and "in logits (tolerance 0)" in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_export_into_an_unwritable_place_is_one_line_before_any_work(digits_run, capsys):
    run, images = digits_run
    image = sorted(images.glob("*.png"))[0]
    assert main(["export", "--run", str(run), "--format", "torchscript", "--out", f"{image}/model.pt"]) == 2
    err = capsys.readouterr().err
    assert err == f"ktg: error: cannot write the model file --out {image}: {image} is a file, not a folder\n"


def test_an_export_whose_description_cannot_be_written_leaves_no_model(digits_run, tmp_path, capsys):
    out = tmp_path / "model.pt"
    Path(f"{out}.json").mkdir()  # a folder where the description goes
    assert main(["export", "--run", str(digits_run[0]), "--format", "torchscript", "--out", str(out)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not out.exists()


def test_onnx_export_without_the_extra_says_how_to_install_it(digits_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    assert main(["export", "--run", str(digits_run[0]), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "pip install -e '.[export]'" in capsys.readouterr().err


def test_a_run_loads_without_the_files_its_nodes_started_from(digits_run, tmp_path):
    run, images = digits_run
    moved = tmp_path / "run"
    shutil.copytree(run, moved)
    graph = json.loads((moved / "graph.json").read_text())
    graph["nodes"][0]["weights"] = {"file": str(tmp_path / "deleted-start.pt")}  # gone since training
    (moved / "graph.json").write_text(json.dumps(graph))
    inputs = ktg.preprocess(sorted(images.glob("*.png"))[:3], run)
    with torch.no_grad():
        assert torch.equal(ktg.load_run(moved)(inputs), ktg.load_run(run)(inputs))
