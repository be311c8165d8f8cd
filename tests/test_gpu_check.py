"""experiments/gpu_check.py, the one command that checks ktg on a GPU, runs every step in its quick form on a CPU
(timings are never checked, only that each step ran and was recorded)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "gpu_check.py"
_spec = importlib.util.spec_from_file_location("experiments_gpu_check", SCRIPT)
gpu_check = sys.modules["experiments_gpu_check"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_check)


@pytest.mark.slow
def test_the_quick_check_runs_every_step_on_a_cpu(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--out", str(out),
                           "--work", str(tmp_path / "work")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    # Few files, as the GPU machine sends back at most eight.
    assert sorted(path.name for path in out.iterdir()) == ["gpu_check.json", "gpu_check.log", "gpu_check.md"]
    results = json.loads((out / "gpu_check.json").read_text())

    statuses = {name: step["status"] for name, step in results["steps"].items()}
    assert statuses == {"environment": "ok", "tests": "ok", "train": "ok", "search": "ok", "benchmark": "ok",
                        "cudagraphs": "skipped"}
    assert results["environment"]["optuna"] and not results["environment"]["cuda_available"]
    # Every CUDA test was collected (and skipped here), among them each one a check is read from.
    names = {test["name"].split("[")[0] for test in results["tests"]}
    assert set(gpu_check.TEST_CHECKS.values()) <= names
    assert {test["outcome"] for test in results["tests"]} == {"skipped"}
    assert [epoch["epoch"] for epoch in results["train"]["epochs"]] == [1, 2]
    trials = results["search"]["trials"]
    assert len(trials) == 2 and {t["state"] for t in trials} <= {"complete", "pruned"}
    assert {(r["graph"], r["mode"]) for r in results["benchmark"]["rows"]} == {
        (g, m) for g in ("independent", "heavy", "random") for m in ("reference", "fast")}
    assert [r["jobs"] for r in results["benchmark"]["concurrency"]] == [2]

    targets = {t["target"]: t for t in results["summary"]["targets"]}
    assert targets["ktg train end to end (heavy graph, 2 epochs, batch 16)"]["met"] is True
    assert targets["ktg search, 2 workers"]["met"] is True
    assert targets["--deterministic bit-exact"]["met"] is None  # skipped off CUDA: not judged
    assert all(t["met"] is None for t in results["benchmark"]["summary"]["targets"])  # judged on Hopper only
    report = (out / "gpu_check.md").read_text()
    assert report in done.stdout and "## Targets" in report and "| heavy | fast | 16 |" in report


@pytest.mark.parametrize("outcomes, met", [(["passed", "passed"], True), (["passed", "failed"], False),
                                           (["skipped", "skipped"], None), ([], None)])
def test_a_check_is_met_only_when_all_its_cuda_tests_passed(outcomes, met):
    tests = [{"name": f"test_a_training_step_reads_nothing_back_to_the_host[cuda-{mode}]", "outcome": outcome}
             for mode, outcome in zip(("reference", "fast"), outcomes)]
    tests.append({"name": "test_a_training_step_reads_nothing_back_to_the_host[cpu-fast]", "outcome": "failed"})
    row = gpu_check.test_checks(tests)[0]
    assert row["target"] == "zero host syncs in a training step" and row["met"] is met


def test_missing_wheels_stop_the_check_before_anything_runs(tmp_path, capsys):
    args = gpu_check.get_args_parser().parse_args(["--wheels", str(tmp_path), "--out", str(tmp_path / "out"),
                                                   "--work", str(tmp_path / "work")])
    with pytest.raises(SystemExit, match="no wheels in .*--download-wheels"):
        gpu_check.main(args)
    assert not (tmp_path / "out" / "gpu_check.json").exists()
