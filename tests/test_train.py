"""Training runs end to end: files written, resume exactness, bad input and NaN handled, ktg eval."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_runs import TINY, narrow

import ktg
from ktg.cli import main
from ktg.config import TrainConfig
from ktg.data import load_dataset
from ktg.engine import build_graph
from ktg.errors import KTGError
from ktg.graph import EdgeSpec, GraphSpec, NodeSpec, dml, independent
from ktg.nonfinite import LAG, FirstNonFiniteStep
from ktg.optim import make_optimizer
from ktg.provenance import Provenance, git_state
from ktg.run_folder import RunFolder
from ktg.train import NonFiniteLossError, make_train_step, train


def tiny_data():
    return load_dataset("synthetic", image_size=16, train_size=64, test_size=32, num_classes=4)


def heavy_graph():
    edges = tuple(EdgeSpec(s, t, design, gate) for (s, t), design, gate in [
        ((0, 1), "prob_kl+att_mse", "through"), ((1, 0), "prob_cos+att_cos", "linear"),
        ((0, 2), "att_mse", "correct"), ((2, 1), "prob_kl", "through"),
    ])
    return GraphSpec((NodeSpec("abn_resnet20"),) * 3, ("through", "linear", "correct"), edges, crop_sizes=(3, 5))


CONFIG = TrainConfig(epochs=3, batch_size=16, lr=0.05, device="cpu")


def test_a_run_writes_its_files(tmp_path):
    final = train(narrow(heavy_graph()), tiny_data(), CONFIG, tmp_path, progress=False)
    assert len(final.node_accuracy) == 3 and all(0 <= a <= 1 for a in final.node_accuracy)
    assert json.loads((tmp_path / "metrics.json").read_text()) == final.to_dict()
    assert RunFolder(tmp_path).read_metrics() == final
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2, 3] and lines[0]["split"] == "test"
    assert "edge 0→1 prob_kl+att_mse/through" in lines[0]["losses"]
    assert lines[0]["gate_weights"]["label→1 abn_ce/linear"] < lines[-1]["gate_weights"]["label→1 abn_ce/linear"]
    saved = GraphSpec.load(tmp_path / "graph.json")
    assert saved.nodes[0] == NodeSpec("abn_resnet20", TINY)
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert RunFolder(tmp_path).load_checkpoint().epoch == 3
    assert not list(tmp_path.glob(".*.tmp"))
    config = RunFolder(tmp_path).read_config()
    assert (config.train.amp, config.train.channels_last) == (False, False)  # settled for the CPU
    commit, modified = git_state(Path(ktg.__file__).resolve().parent.parent)
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    assert config.provenance.to_dict() == {
        "device": "cpu", "precision": "fp32", "channels_last": False, "gpu": None, "torch": torch.__version__,
        "cuda": torch.version.cuda, "cudnn": None if cudnn is None else str(cudnn), "tf32_convolutions": None,
        "ktg_version": ktg.__version__, "git_commit": commit, "git_modified": modified,
        "cpu_threads": torch.get_num_threads()}
    written_before = {key: value for key, value in config.provenance.to_dict().items() if key != "cpu_threads"}
    assert Provenance.from_dict(written_before).cpu_threads is None  # a run folder from before the count was kept


def test_a_graph_with_everything_cut_off_moves_no_weight_and_finishes(tmp_path):
    spec = GraphSpec((NodeSpec("abn_resnet20", TINY),) * 2, ("cutoff", "cutoff"),
                     (EdgeSpec(0, 1, "prob_kl", "cutoff"), EdgeSpec(1, 0, "att_mse", "cutoff")), crop_sizes=(3,))
    data = tiny_data()
    graph = build_graph(spec, data.num_classes, 16).train()
    step = make_train_step(graph, make_optimizer(graph, CONFIG, torch.device("cpu")), amp=False, channels_last=False)
    before = {key: value.clone() for key, value in graph.state_dict().items()}
    assert step(data.train.images[:16].float() / 255, data.train.labels[:16], 1, 10).terms == {}
    moved = {key for key, value in graph.state_dict().items() if not torch.equal(value, before[key])}
    assert moved and all(key.rsplit(".", 1)[1] in ("running_mean", "running_var", "num_batches_tracked")
                         for key in moved)  # BatchNorm statistics only: the forward ran, nothing learned

    final = train(spec, data, dataclasses.replace(CONFIG, epochs=1), tmp_path, progress=False)
    assert final.epochs == 1 and not final.stopped_early
    last = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["losses"] == {} and last["gate_weights"] == {} and last["train_loss"] == 0


class Interrupt(Exception):
    pass


def test_resume_after_an_interruption_gives_the_same_weights(tmp_path):
    data = tiny_data()
    train(narrow(heavy_graph()), data, CONFIG, tmp_path / "straight", progress=False)

    def stop_after_first_epoch(epoch, metrics):
        raise Interrupt

    with pytest.raises(Interrupt):
        train(narrow(heavy_graph()), data, CONFIG, tmp_path / "resumed", progress=False,
              callback=stop_after_first_epoch)
    assert len((tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()) == 1
    train(narrow(heavy_graph()), data, CONFIG, tmp_path / "resumed", progress=False, resume=True)

    straight = RunFolder(tmp_path / "straight").load_checkpoint()
    resumed = RunFolder(tmp_path / "resumed").load_checkpoint()
    for key, value in straight.model.items():
        assert torch.equal(value, resumed.model[key]), key
    assert straight.history[-1].losses == resumed.history[-1].losses
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_a_callback_can_stop_the_run_early(tmp_path):
    seen = []
    final = train(narrow(dml(2)), tiny_data(), CONFIG, tmp_path, progress=False,
                  callback=lambda epoch, metrics: seen.append(metrics.ensemble_accuracy) or epoch == 2)
    assert len(seen) == 2 and final.epochs == 2 and final.stopped_early


def test_existing_run_needs_resume_and_resume_needs_the_same_options(tmp_path):
    data = tiny_data()
    short = TrainConfig(epochs=1, batch_size=16, device="cpu")
    train(narrow(dml(2)), data, short, tmp_path, progress=False)
    with pytest.raises(KTGError, match="already holds a run"):
        train(narrow(dml(2)), data, short, tmp_path, progress=False)
    with pytest.raises(KTGError, match=r"lr: saved run has 0.1, you gave 0.2"):
        train(narrow(dml(2)), data, TrainConfig(epochs=1, batch_size=16, lr=0.2, device="cpu"), tmp_path,
              progress=False, resume=True)
    # The rule of a study's workers (ktg.config.training_identity): the precision is compared as resolved.
    with pytest.raises(KTGError, match=r"precision: saved run has 'fp32', you gave 'bf16 autocast'"):
        train(narrow(dml(2)), data, dataclasses.replace(short, amp=True), tmp_path, progress=False, resume=True)
    with pytest.raises(KTGError, match="nothing to resume"):
        train(narrow(dml(2)), data, short, tmp_path / "new", progress=False, resume=True)
    with pytest.raises(KTGError, match="the graph differs"):
        train(narrow(independent(2)), data, short, tmp_path, progress=False, resume=True)
    # a graph's label is not its training: the same graph under another name resumes
    train(dataclasses.replace(narrow(dml(2)), name="renamed"), data, short, tmp_path, progress=False, resume=True)


def test_non_finite_loss_is_reported_and_the_last_good_checkpoint_kept(tmp_path):
    data = tiny_data()
    train(narrow(dml(2)), data, TrainConfig(epochs=1, batch_size=16, device="cpu"), tmp_path / "ok", progress=False)
    good = RunFolder(tmp_path / "ok").checkpoint_file.read_bytes()
    poisoned = tiny_data()

    def nan_transform(images, generator=None, **kwargs):
        out = data.train_transform(images, generator, **kwargs)
        return out * float("nan")

    poisoned.train_transform = nan_transform
    with pytest.raises(NonFiniteLossError, match="non-finite loss in epoch 1, step 1 of 4, on label→0"):
        train(narrow(dml(2)), poisoned, TrainConfig(epochs=2, batch_size=16, device="cpu"), tmp_path / "nan",
              progress=False)
    assert not RunFolder(tmp_path / "nan").holds_run()
    assert RunFolder(tmp_path / "ok").checkpoint_file.read_bytes() == good


def test_a_nan_stops_the_run_at_its_step_naming_its_edge_and_keeps_the_last_good_epoch(tmp_path, monkeypatch):
    import ktg.train

    spec = narrow(dml(2))
    poisoned_edge = next(edge.label for edge in spec.edges if edge.source == 1)
    steps_run = []

    def make_poisoned_step(*args, **kwargs):
        step = make_train_step(*args, **kwargs)

        def poisoned(images, labels, iteration, total_iterations, sample_weights=None):
            losses = step(images, labels, iteration, total_iterations, sample_weights)
            steps_run.append(iteration)
            if iteration == 10:  # epoch 2 of 8 steps (64 images, batch 8), its second step
                losses.terms[poisoned_edge] = losses.terms[poisoned_edge] * float("nan")
            return losses

        return poisoned

    monkeypatch.setattr(ktg.train, "make_train_step", make_poisoned_step)
    message = rf"^non-finite loss in epoch 2, step 2 of 8, on {poisoned_edge}; the run stopped without saving"
    with pytest.raises(NonFiniteLossError, match=message) as error:
        train(spec, tiny_data(), TrainConfig(epochs=3, batch_size=8, device="cpu"), tmp_path, progress=False)
    assert (error.value.epoch, error.value.step, error.value.edges) == (2, 2, [poisoned_edge])
    # stopped LAG steps later, not at the end of the epoch; epoch 1 is the run's last checkpoint and record
    assert steps_run == list(range(1, 10 + LAG + 1))
    run = RunFolder(tmp_path)
    assert run.load_checkpoint().epoch == 1
    assert [json.loads(line)["epoch"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1]


def test_the_watch_reads_each_steps_record_lag_steps_late_and_the_last_steps_at_the_end():
    def watch_of(bad_step, steps):
        watch, seen = FirstNonFiniteStep(["a", "b"], torch.device("cpu")), []
        for step in range(1, steps + 1):
            terms = torch.tensor([1.0, float("inf") if step == bad_step else 1.0])
            seen.append(watch.record(terms))
        return seen, watch.finish()

    seen, finished = watch_of(bad_step=2, steps=6)
    assert seen == [None] * (1 + LAG) + [(2, ["b"])] * (6 - 1 - LAG) and finished == (2, ["b"])
    seen, finished = watch_of(bad_step=6, steps=6)  # the last step: only the end of the epoch sees it
    assert seen == [None] * 6 and finished == (6, ["b"])
    assert watch_of(bad_step=0, steps=3) == ([None] * 3, None)


class UnpoolingBackward(torch.autograd.Function):
    """The identity, whose backward runs max_unpool2d: an operation without a deterministic implementation (on
    the CPU too), which shows only in a training step, as most of CUDA's do."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        pooled, indices = torch.nn.functional.max_pool2d(grad, 2, return_indices=True)
        return torch.nn.functional.max_unpool2d(pooled, indices, 2, output_size=grad.shape[-2:])


def test_deterministic_fails_on_an_operation_without_a_deterministic_kernel(tmp_path, monkeypatch):
    import ktg.train

    def build_with_unpooling(*args, **kwargs):
        graph = build_graph(*args, **kwargs)
        graph.nodes[0].bn1.register_forward_hook(lambda module, inputs, output: UnpoolingBackward.apply(output))
        return graph

    monkeypatch.setattr(ktg.train, "build_graph", build_with_unpooling)
    config = TrainConfig(epochs=1, batch_size=16, device="cpu")
    try:
        with pytest.raises(KTGError, match=r"^--deterministic: max_unpooling2d_forward_out has no deterministic "
                                           r"implementation in PyTorch .*; train without --deterministic$"):
            train(narrow(dml(2)), tiny_data(), dataclasses.replace(config, deterministic=True), tmp_path / "strict",
                  progress=False)
        assert not RunFolder(tmp_path / "strict").holds_run()
        train(narrow(dml(2)), tiny_data(), config, tmp_path / "free", progress=False)  # without, the same trains
    finally:
        torch.use_deterministic_algorithms(False)  # process-wide: the tests after this one must not inherit it


def test_building_a_model_and_setting_plain_kernels_imports_neither_torchvision_nor_torchs_compiler():
    # Each costs a process about 1.5 s of its start on a CPU (torchvision imports torch._dynamo; switching off the
    # deterministic flag imports torch._inductor): ktg eval, predict and export start that much sooner.
    code = ("import sys, torch\n"
            "from ktg.models import create_model\n"
            "from ktg.runtime import configure_kernels\n"
            "create_model('abn_resnet18', 3, base_width=4)\n"
            "configure_kernels(torch.device('cpu'), deterministic=False)\n"
            "print(*(name in sys.modules for name in ('torchvision', 'torch._dynamo', 'torch._inductor')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False", "False", "False"], done.stderr


def test_a_run_evaluates_where_asked_and_always_at_its_end(tmp_path):
    final = train(narrow(dml(2)), tiny_data(), CONFIG, tmp_path, progress=False, eval_epochs={1})
    records = RunFolder(tmp_path).read_epochs()
    assert [record.evaluated for record in records] == [True, False, True]
    assert "ensemble_accuracy" not in json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[1])
    assert (final.node_accuracy, final.ensemble_accuracy) == (records[2].node_accuracy, records[2].ensemble_accuracy)
    # evaluated on the test split: no file chooses a best epoch there
    assert final.best_epoch is None and "best_epoch" not in json.loads((tmp_path / "metrics.json").read_text())


def test_a_run_stopped_after_an_epoch_not_evaluated_evaluates_it(tmp_path):
    final = train(narrow(dml(2)), tiny_data(), CONFIG, tmp_path, progress=False, eval_epochs=(),
                  callback=lambda epoch, record: epoch == 2)
    records = RunFolder(tmp_path).read_epochs()
    assert [record.evaluated for record in records] == [False, True] and final.stopped_early
    assert final.epochs == 2 and final.ensemble_accuracy == records[1].ensemble_accuracy


def test_holdout_evaluates_on_a_saved_validation_split(tmp_path):
    config = TrainConfig(epochs=1, batch_size=16, device="cpu", holdout=0.5)
    final = train(narrow(dml(2)), tiny_data(), config, tmp_path, progress=False)
    split = json.loads((tmp_path / "split.json").read_text())
    assert final.split == "val" and final.best_epoch == 1  # the best validation epoch may be recorded
    assert len(split["train_indices"]) + len(split["val_indices"]) == 64
    assert not set(split["train_indices"]) & set(split["val_indices"])


def test_cli_train_then_eval(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--graph", "dml", "--nodes", "3", "--dataset", "synthetic", "--image-size", "16",
                 "--dataset-option", "train_size=64", "--dataset-option", "test_size=32", "--width", "4",
                 "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--out", str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "ensemble" in printed and str(out) in printed
    assert main(["eval", "--run", str(out), "--device", "cpu", "--no-progress", "--power", "0.1"]) == 0
    report = json.loads((out / "eval_test.json").read_text())
    assert set(report["ensemble_accuracy"]) == {"mean_logits", "mean_probabilities", "majority_vote",
                                                "power_mean(u=0.1)"}
    final = json.loads((out / "metrics.json").read_text())
    assert report["ensemble_accuracy"]["mean_logits"] == pytest.approx(final["ensemble_accuracy"])


@pytest.mark.parametrize("argv, message", [
    (["train", "--dataset", "imagenet22k"], "unknown dataset 'imagenet22k'; choose one of:"),
    (["train", "--dataset", "digits", "--graph", "nope.json"], "neither a named graph"),
    (["train", "--dataset", "digits", "--model", "vit", "--epochs", "1"], "unknown model 'vit'"),
    (["eval", "--run", "/nonexistent"], "is not a ktg run folder"),
    (["train", "--dataset", "digits", "--eval-every", "0"], "--eval-every must be at least 1, got 0"),
])
def test_cli_user_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("ktg: error: ") and message in err and "Traceback" not in err


@pytest.mark.parametrize("option, message", [
    (["--epochs", "-1"], "--epochs must be ≥ 1, got -1"),
    (["--batch-size", "0"], "--batch-size must be ≥ 1, got 0"),
    (["--lr", "0"], "--lr must be a number above 0, got 0.0"),
    (["--holdout", "1.5"], "--holdout must be a number in (0, 1), got 1.5"),
    (["--schedule", "step"], "--schedule step needs --milestones"),
    (["--schedule", "step", "--epochs", "10", "--milestones", "5", "10"],
     "--milestones 5 10: each must be at least 1 and below --epochs 10"),
    (["--schedule", "step", "--epochs", "10", "--milestones", "6", "3"], "in increasing order"),
    (["--schedule", "cosine", "--milestones", "3"], "--schedule cosine has no milestones"),
    (["--milestones", "3"], "drop --milestones or use --schedule step"),
])
def test_cli_training_errors_name_the_option_and_write_nothing(tmp_path, option, message, capsys):
    assert main(["train", "--dataset", "digits", "--device", "cpu", "--out", str(tmp_path / "run"), *option]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ktg: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    assert "--graph" in capsys.readouterr().out


def test_written_files_follow_the_umask_not_owner_only(tmp_path):
    import os

    from ktg.io import write_json

    write_json(tmp_path / "x.json", {"a": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o666 & ~umask
