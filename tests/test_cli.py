"""The command line as the top layer: its own package, run as ``python -m ktg.cli``, answering at once."""

from __future__ import annotations

import ast
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_search import PLAIN_SEARCH

import ktg
from ktg.cli import build_parser, main
from ktg.progress import Progress, inner_bar

PACKAGE = Path(ktg.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Every module a Python file imports, at any depth (``from ktg.cli import x`` gives ``ktg.cli``)."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def test_only_the_cli_imports_argparse():
    library = [path for path in PACKAGE.rglob("*.py") if PACKAGE / "cli" not in path.parents]
    assert sorted(str(path.relative_to(PACKAGE)) for path in library if "argparse" in imported_modules(path)) == []


HEAVY = ("torch", "optuna", "matplotlib", "tensorboard")


#: ``python -m ktg.cli`` that also writes, as it exits, which of :data:`HEAVY` it imported into the file named by
#: the environment variable KTG_TEST_IMPORTED.
_CLI_REPORTING_IMPORTS = f"""
import atexit, os, runpy, sys
def report():
    with open(os.environ["KTG_TEST_IMPORTED"], "w") as file:
        file.write(",".join(m for m in {HEAVY!r} if m in sys.modules))
atexit.register(report)
runpy.run_module("ktg.cli", run_name="__main__", alter_sys=True)
"""


def run_cli(*args: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    """``python -m ktg.cli ARGS`` in a fresh interpreter: (its result, the frameworks of :data:`HEAVY` it
    imported). A command that answers without one answers at once, whatever the machine's load: that, not a
    time, is what is checked."""
    report = tmp_path / "imported.txt"
    done = subprocess.run([sys.executable, "-c", _CLI_REPORTING_IMPORTS, *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "KTG_TEST_IMPORTED": str(report)})
    return done, [name for name in report.read_text().split(",") if name]


def test_building_every_parser_imports_no_framework():
    code = ("import sys; from ktg.cli import build_parser; build_parser(); "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_what_a_command_checks_first_imports_no_framework():
    # The registries of datasets and models, a data source's suggestions, a search's settings and space, the run
    # folder: a command checks all of these before it imports torch or Optuna.
    code = ("import sys; from ktg.data import DataSource, list_datasets; from ktg.models import list_models; "
            "from ktg.run_folder import RunFolder; from ktg.search.settings import SearchSettings; "
            "from ktg.search.space import SearchSpace; DataSource('digits').defaults; SearchSpace(num_nodes=3); "
            f"print(len(list_datasets()), len(list_models()), ','.join(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["8", "9"]


@pytest.mark.parametrize("args, expected", [
    (["--version"], f"ktg {ktg.__version__}\n"),
    (["--help"], "usage: ktg"),
    (["train", "--help"], "usage: ktg train"),
    (["search", "--help"], "usage: ktg search"),
])
def test_version_and_help_answer_without_importing_a_framework(args, expected, tmp_path):
    done, imported = run_cli(*args, tmp_path=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith(expected)
    assert imported == []


@pytest.mark.parametrize("args, option", [
    (["train", "--epochs", "x"], "--epochs"),
    (["eval"], "--run"),
    (["search", "--pruner", "nope"], "--pruner"),
    (["search", "--designs", "prob_l2"], "--designs"),
    (["study", "show"], "--storage"),
    (["graph", "show", "dml", "--format", "jpeg"], "--format"),
    (["attention", "--run", "r", "--n", "many"], "--n"),
    (["chain", "c.json"], "--out"),
    (["fly"], "COMMAND"),
    # Values argparse accepts but the command refuses: checked before any framework is imported.
    (["train", "--dataset", "digits", "--epochs", "-1"], "--epochs must be ≥ 1, got -1"),
    (["train", "--dataset", "digits", "--batch-size", "0"], "--batch-size must be ≥ 1, got 0"),
    (["train", "--dataset", "nope", "--epochs", "1"], "unknown dataset 'nope'; choose one of: cifar10,"),
    (["train", "--dataset", "digits", "--model", "vit"], "unknown model 'vit'; choose one of: abn_resnet101,"),
    (["train", "--dataset", "digits", "--graph", "no/such/graph.json"], "no/such/graph.json"),
    (["search", "--dataset", "digits", "--trials", "0"], "--trials must be at least 1, got 0"),
    (["search", "--dataset", "digits", "--max-failures", "0"], "--max-failures: must be at least 1, got 0"),
    (["search", "--dataset", "digits", "--epochs", "0"], "--epochs must be ≥ 1, got 0"),
    (["search", "--dataset", "digits", "--epochs", "4", "--first-rung", "0"],
     "--first-rung must be an epoch of a trial, from 1 to 8, got 0"),
    (["search", "--dataset", "digits", "--epochs", "4", "--first-rung", "9"],
     "--first-rung must be an epoch of a trial, from 1 to 8, got 9"),
    (["search", "--dataset", "digits", "--epochs", "4", "--trial-length", "epochs", "--first-rung", "5"],
     "--first-rung must be an epoch of a trial, from 1 to 4, got 5"),
    (["search", "--dataset", "digits", "--trial-length", "long"], "--trial-length"),
    (["search", "--dataset", "nope"], "unknown dataset 'nope'"),
    (["chain", "c.json", "--out", "c", "--dataset", "nope"], "unknown dataset 'nope'"),
    (["search", "--dataset", "digits", "--models", "abn_resnet20", "vit"], "unknown model 'vit'"),
    # Without --dataset no data is read: a default would read its own data, whatever --data-root points at.
    (["search", "--data-root", "data/dogs"], "--dataset is required (--data-root alone does not say how to read "
     "it): one of cifar10, cifar100, cub200, digits,"),
    (["train", "--epochs", "1"], "--dataset is required"),
    (["chain", "c.json", "--out", "c"], "--dataset is required"),
    (["eval", "--run", "/no/such/run"], "/no/such/run is not a ktg run folder: it does not exist"),
    (["eval", "--run", "r", "--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["eval", "--run", "r", "--power", "2", "0"], "--power: the power-mean exponents must be positive, got 2.0 0.0"),
    (["attention", "--run", "r", "--dpi", "0"], "--dpi must be at least 1, got 0"),
    (["attention", "--run", "/no/such/run"], "/no/such/run is not a ktg run folder: it does not exist"),
    (["predict", "--run", "/no/such/run", "image.png"], "/no/such/run is not a ktg run folder: it does not exist"),
    (["predict", "--run", "r", "image.png", "--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["predict", "--run", "r", "image.png", "--power", "2"], "--power applies to --ensemble power_mean only, not to "
     "mean_logits"),
    (["export", "--run", "/no/such/run", "--format", "onnx", "--out", "m.onnx"], "/no/such/run is not a ktg run"),
    (["graph", "show", "no/such/graph.json"], "'no/such/graph.json' is neither a named graph"),
    (["graph", "show", str(PACKAGE)], "is a folder without graph.json (a run) or best_graph.json (a search)"),
    (["study", "show", "--storage", "/no/such/study.db"], "--storage '/no/such/study.db' is neither a database URL"),
    (["study", "fidelity"], "--storage"),
    (["study", "fidelity", "--storage", "/no/such/study.db"], "--storage '/no/such/study.db' is neither a database"),
    (["storage", "serve"], "--storage"),
    (["storage", "serve", "--storage", "s.db", "--port", "70000"], "--port must be between 0 and 65535, got 70000"),
])
def test_an_argument_error_is_one_line_naming_the_option_without_importing_a_framework(args, option, tmp_path):
    done, imported = run_cli(*args, tmp_path=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and ": error: " in lines[0] and option in lines[0], done.stderr
    assert imported == []


@pytest.mark.parametrize("args", [["graph", "show", "dml"], ["--help"]])
@pytest.mark.parametrize("unbuffered", [False, True])
def test_a_reader_that_went_away_ends_the_command_quietly(args, unbuffered):
    # `ktg predict … | head`: stdout is a pipe nobody reads any more (here: closed before the command starts).
    env = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-m", "ktg.cli", *args], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, env=env, timeout=60)
    finally:
        os.close(write_end)
    assert done.stderr == ""
    # 141 as for a command killed by SIGPIPE; argparse itself ignores a failed write of the help when unbuffered
    assert done.returncode == (0 if unbuffered and args == ["--help"] else 141)


# -- progress a person can read ---------------------------------------------------------------------------------

TINY_RUN = ["--dataset", "synthetic", "--image-size", "16", "--dataset-option", "train_size=32", "--dataset-option",
            "test_size=8", "--dataset-option", "num_classes=2", "--width", "4", "--batch-size", "8", "--device", "cpu"]


def test_a_log_gets_one_plain_line_per_epoch(tmp_path, capsys):
    assert main(["train", "--nodes", "2", "--epochs", "2", "--out", str(tmp_path / "run"), *TINY_RUN]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    assert all("ensemble" in line and "\r" not in line and "\x1b" not in line for line in lines)
    assert main(["eval", "--run", str(tmp_path / "run"), "--device", "cpu"]) == 0
    assert capsys.readouterr().err == ""


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_bars_and_no_progress_gets_nothing(monkeypatch):
    for stream, enabled in ((Terminal(), True), (io.StringIO(), False), (Terminal(), False)):
        monkeypatch.setattr(sys, "stderr", stream)
        with Progress(2, desc="training", unit="epoch", enabled=enabled) as progress:
            for epoch in (1, 2):
                list(inner_bar(range(3), total=3, desc=f"epoch {epoch}", unit="batch", enabled=enabled))
                progress.finished(f"epoch {epoch}/2", ensemble="0.5")
        shown = stream.getvalue()
        if enabled:
            assert "\r" in shown and "training" in shown and "ensemble=0.5" in shown and "epoch 1/2" not in shown
        else:
            assert shown == ""


def test_a_search_log_gets_one_line_per_ended_trial(capsys):
    import optuna

    from ktg.run_folder import EpochRecord
    from ktg.search.display import SearchDisplay

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    display = SearchDisplay(study, 3, enabled=True, epochs=2)
    study.add_trial(optuna.create_trial(value=0.5, intermediate_values={1: 0.4, 2: 0.5}))
    display.epoch(1, 1, EpochRecord(epoch=1, split="val", lr=0.1, train_loss=1.0, losses={}, gate_weights={},
                                    train_seconds=1.0, images_per_second=1.0, node_accuracy=(0.25,),
                                    ensemble_accuracy=0.25))
    study.add_trial(optuna.create_trial(state=optuna.trial.TrialState.PRUNED, intermediate_values={1: 0.1}))
    display.update(study)
    display.update(study)
    display.close()
    assert capsys.readouterr().err.splitlines() == ["trial 0: complete, ensemble 50.00 % after 2 epochs",
                                                    "trial 1: pruned after epoch 1, ensemble 10.00 %"]


# -- no traceback from user input or environment -----------------------------------------------------------------


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ktg: error: ") and "Traceback" not in captured.err, captured.err
    return lines[0]


def test_a_missing_database_driver_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "psycopg2", None)  # as if psycopg2 were not installed
    assert main(["study", "show", "--storage", "postgresql+psycopg2://user:secret@localhost/db"]) == 2
    line = one_error_line(capsys)
    assert "'psycopg2'" in line and "pip install 'ktg[postgres]'" in line and "secret" not in line


def test_a_storage_that_cannot_be_created_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["study", "show", "--storage", f"sqlite:///{tmp_path}/file/study.db"]) == 2
    assert "cannot create the storage" in one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize("name", ["graph.dot", "graph.png"])
def test_an_output_under_a_file_is_one_line_naming_the_file_in_the_way(tmp_path, name, capsys):
    (tmp_path / "file").write_text("")
    assert main(["graph", "show", "dml", "--out", str(tmp_path / "file" / name)]) == 2
    assert one_error_line(capsys).endswith(f"{tmp_path / 'file'} is a file, not a folder")
    assert (tmp_path / "file").read_text() == ""


@pytest.mark.parametrize("finished", [0, 1])
def test_ctrl_c_says_whether_finished_epochs_are_kept(tmp_path, monkeypatch, capsys, finished):
    import ktg.train

    real_epoch = ktg.train.train_one_epoch
    calls = []

    def interrupted_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) > finished:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(ktg.train, "train_one_epoch", interrupted_epoch)
    command = ["train", "--nodes", "2", "--epochs", "2", "--out", str(tmp_path / "run"), "--no-progress", *TINY_RUN]
    assert main(command) == 130
    message = capsys.readouterr().err.strip()
    monkeypatch.setattr(ktg.train, "train_one_epoch", real_epoch)
    if finished:
        assert message.endswith("its finished epochs are kept: add --resume to continue")
        assert main([*command, "--resume"]) == 0
    else:
        assert message.endswith("no epoch had finished, so nothing is kept: run the same command again to start over")
        assert main(command) == 0


SEARCH = ["search", *PLAIN_SEARCH, "--nodes", "2", "--trials", "1", "--epochs", "1", "--crop-sizes", "3", "5",
          "--device", "cpu"]


@pytest.mark.parametrize("args, message", [
    ([*TINY_RUN, "--image-size", "8", "--crop-sizes", "3", "5"],
     "--crop-sizes: the attention maps of abn_resnet20 on 8-px images (--image-size) are 4×4, too small for crop "
     "size 5"),
    (["--dataset", "cifar10", "--data-root", "{tmp}/nothing"], "cifar10: expected"),
    ([*TINY_RUN, "--out", "{tmp}/file/search"], "cannot write the search folder --out"),
    ([*TINY_RUN, "--storage", "postgresql+psycopg2://user:secret@localhost/db"], "pip install 'ktg[postgres]'"),
    ([*TINY_RUN, "--storage", "grpc://127.0.0.1:1", "--heartbeat-interval", "1", "--grace-period", "2"],
     "the storage server grpc://127.0.0.1:1 did not answer within 2 s"),
    ([*TINY_RUN, "--storage", "grpc://somewhere"], "a study served by ktg storage serve is reached as grpc://HOST:PORT"),
])
def test_a_search_refuses_bad_input_before_it_writes_anything(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.setitem(sys.modules, "psycopg2", None)  # as if psycopg2 were not installed
    (tmp_path / "file").write_text("")
    command = [*SEARCH, "--out", str(tmp_path / "search"), *(arg.format(tmp=tmp_path) for arg in args)]
    assert main(command) == 2
    assert message in one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_served_study_without_grpcio_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "grpc", None)  # as if grpcio were not installed
    monkeypatch.delitem(sys.modules, "ktg.search.proxy", raising=False)
    assert main(["study", "show", "--storage", "grpc://localhost:1"]) == 2
    assert "needs the Python package 'grpc', which is not installed: pip install 'ktg[grpc]'" in one_error_line(capsys)


@pytest.mark.parametrize("error, expected", [
    (PermissionError(13, "Permission denied", "/data/run"), "ktg: error: /data/run: Permission denied"),
    (ModuleNotFoundError("No module named 'h5py'", name="h5py"), "ktg: error: No module named 'h5py' (a package"),
])
def test_an_error_of_the_environment_is_one_line(monkeypatch, capsys, error, expected):
    def failing(args):
        raise error

    monkeypatch.setattr("ktg.cli.eval.run", failing)
    assert main(["eval", "--run", "somewhere"]) == 2
    assert one_error_line(capsys).startswith(expected)


def test_a_missing_module_of_ktg_itself_keeps_its_traceback(monkeypatch):
    def failing(args):
        raise ModuleNotFoundError("No module named 'ktg.nowhere'", name="ktg.nowhere")

    monkeypatch.setattr("ktg.cli.eval.run", failing)
    with pytest.raises(ModuleNotFoundError):
        main(["eval", "--run", "somewhere"])


def test_commands_that_run_a_trained_graph_default_to_the_same_device():
    parser = build_parser()
    devices = {command: parser.parse_args([command, "--run", "r", *extra]).device
               for command, extra in (("eval", []), ("predict", ["image.png"]), ("attention", []))}
    assert devices == {"eval": "auto", "predict": "auto", "attention": "auto"}


def test_max_failures_reaches_the_search_settings():
    from ktg.cli.search import search_settings_from_args

    args = build_parser().parse_args(["search", "--dataset", "digits", "--max-failures", "3"])
    assert search_settings_from_args(args).max_failures_in_a_row == 3
