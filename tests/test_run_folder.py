"""A run folder after damage and under contention: the previous checkpoint, --restart, one writer at a time."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny_runs import narrow

from ktg.cli import main
from ktg.config import TrainConfig
from ktg.data import load_dataset
from ktg.errors import KTGError
from ktg.graph import EdgeSpec, GraphSpec, NodeSpec, dml
from ktg.run_folder import RunFolder
from ktg.train import train

CONFIG = TrainConfig(epochs=2, batch_size=16, lr=0.05, device="cpu")
ROOT = Path(__file__).resolve().parents[1]
TRAIN_ARGS = ["train", "--graph", "dml", "--nodes", "2", "--dataset", "synthetic", "--image-size", "16",
              "--dataset-option", "train_size=64", "--dataset-option", "test_size=32", "--dataset-option",
              "num_classes=4", "--width", "4", "--batch-size", "16", "--device", "cpu", "--no-progress"]


def tiny_data():
    return load_dataset("synthetic", image_size=16, train_size=64, test_size=32, num_classes=4)


def epochs_logged(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_truncated_latest_checkpoint_resumes_from_the_previous_epoch(tmp_path, capsys):
    data = tiny_data()
    train(narrow(dml(2)), data, CONFIG, tmp_path, progress=False)
    run = RunFolder(tmp_path)
    assert run.load_checkpoint().epoch == 2
    latest = run.checkpoint_file.read_bytes()
    run.checkpoint_file.write_bytes(latest[: len(latest) // 2])

    final = train(narrow(dml(2)), data, CONFIG, tmp_path, progress=False, resume=True)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ktg: warning:")]
    assert len(warnings) == 1 and "cannot read checkpoint" in warnings[0] and "(epoch 1)" in warnings[0]
    assert final.epochs == 2 and epochs_logged(tmp_path) == [1, 2]
    assert run.load_checkpoint().epoch == 2
    # the damaged file was replaced, not kept as the previous checkpoint
    run.checkpoint_file.unlink()
    assert RunFolder(tmp_path).load_checkpoint().epoch == 1


def test_without_any_readable_checkpoint_resume_says_to_restart(tmp_path):
    train(narrow(dml(2)), tiny_data(), TrainConfig(epochs=1, batch_size=16, device="cpu"), tmp_path, progress=False)
    RunFolder(tmp_path).checkpoint_file.write_bytes(b"garbage")
    with pytest.raises(KTGError, match="no previous checkpoint to go back to.*--restart"):
        RunFolder(tmp_path).load_checkpoint()


def test_restart_replaces_the_run_and_leaves_other_files(tmp_path):
    data = tiny_data()
    train(narrow(dml(2)), data, TrainConfig(epochs=1, batch_size=16, device="cpu"), tmp_path, progress=False)
    (tmp_path / "eval_test.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("mine")
    again = TrainConfig(epochs=1, batch_size=16, lr=0.05, device="cpu")
    with pytest.raises(KTGError, match="--restart to replace it"):
        train(narrow(dml(2)), data, again, tmp_path, progress=False)
    assert main([*TRAIN_ARGS, "--epochs", "1", "--lr", "0.05", "--out", str(tmp_path), "--restart"]) == 0
    assert epochs_logged(tmp_path) == [1] and RunFolder(tmp_path).read_config().train.lr == 0.05
    assert not (tmp_path / "eval_test.json").exists() and (tmp_path / "notes.txt").read_text() == "mine"
    with pytest.raises(KTGError, match="choose one"):
        train(narrow(dml(2)), data, again, tmp_path, progress=False, resume=True, restart=True)


def test_a_graph_that_cannot_train_is_refused_before_the_run_folder_is_made(tmp_path, capsys):
    graph = tmp_path / "crops.json"
    GraphSpec((NodeSpec(), NodeSpec()), ("through", "through"), (EdgeSpec(0, 1, "att_mse", "through"),),
              crop_sizes=(3, 11)).save(graph)
    out = tmp_path / "run"
    assert main([*TRAIN_ARGS, "--graph", str(graph), "--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ktg: error: attention crop size 11 does not fit") and err.count("\n") == 1
    assert not out.exists()


def test_a_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path):
    first, second = RunFolder(tmp_path), RunFolder(tmp_path)
    with first.writing():
        with pytest.raises(KTGError, match=rf"is being written by ktg pid {os.getpid()} on "):
            with second.writing():
                pass
    with second.writing():  # released when the first is done
        pass


@pytest.mark.parametrize("where", ["under a file", "read-only"])
def test_an_unwritable_out_is_one_line_and_exit_status_2(tmp_path, where, capsys):
    if where == "under a file":
        (tmp_path / "file").write_text("")
        out = tmp_path / "file" / "run"
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        tmp_path.chmod(0o555)
        out = tmp_path / "run"
    try:
        assert main([*TRAIN_ARGS, "--epochs", "1", "--out", str(out)]) == 2
    finally:
        tmp_path.chmod(0o755)
    err = capsys.readouterr().err
    assert err.startswith(f"ktg: error: cannot write the run folder {out}: ") and err.count("\n") == 1
    assert not out.exists()


def test_a_second_ktg_train_is_refused_and_a_killed_run_can_resume(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [*TRAIN_ARGS, "--epochs", "200", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "ktg.cli", *argv], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not RunFolder(out).holds_run():  # the first epoch has finished
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read().decode()
            time.sleep(0.05)
        before = epochs_logged(out)
        started = time.monotonic()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert time.monotonic() - started < 10 and err.count("\n") == 1
        assert f"is being written by ktg pid {first.pid} on " in err
        assert epochs_logged(out)[: len(before)] == before  # the second writer changed nothing
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
        first.stderr.close()
    done = epochs_logged(out)
    assert done == list(range(1, len(done) + 1))
    # the killed run's lock went with it: --resume continues (here for one more epoch)
    config = TrainConfig(epochs=200, batch_size=16, device="cpu")
    final = train(narrow(dml(2)), tiny_data(), config, out, progress=False, resume=True,
                  callback=lambda epoch, metrics: True)
    assert final.epochs == RunFolder(out).load_checkpoint().epoch >= len(done)
    assert epochs_logged(out) == list(range(1, final.epochs + 1))
