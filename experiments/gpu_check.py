"""One command that checks every CUDA claim of ktg on one GPU within about eight minutes (its ``--budget``; it has
not run on a GPU yet), and writes the evidence:
``gpu_check.json`` (everything measured), ``gpu_check.md`` (the tables, also printed last) and
``gpu_check.log`` (what every step printed), in ``--out``.

Steps, in this order, each a separate process with its own time limit inside ``--budget`` (a step that fails or
runs out of time is recorded as such, the JSON is rewritten after every step, and the next step runs):

1. ``environment``: Python, torch, CUDA, cuDNN, driver, GPU name and memory, optuna; the check stops here if
   optuna cannot be imported (carry it as wheels: ``--wheels``).
2. ``tests``: ``pytest -m cuda`` over the test files that hold CUDA tests (``tests/test_fast_path.py`` among
   them): no host sync inside a training step or while a photo batch is cut (CUDA's own sync check),
   ``--deterministic`` bit for bit, the CUDA-graph mode against eager. Off CUDA they are collected and skipped.
3. ``benchmark``: ``experiments/benchmark.py`` on 3 nodes at 224 px: the independent, heavy and a random graph
   at batch 16 and 64 in modes ``reference`` and ``fast``; 1, 4 and 8 concurrent batch-16 trials taking turns
   and through MPS; one trial at batch 128 as the yardstick; the projected 6,000-trial search.
4. ``train``: ``ktg train`` end to end on synthetic photos (a JPEG tree of Stanford-Dogs-sized images, decoded
   and cached by ktg, cropped to 224 px on the device): the heavy graph (every edge ``prob_kl+att_mse``), two
   epochs at batch 16.
5. ``search``: ``ktg search`` of a few trials with ``--jobs-per-device 2 --mps`` (two worker processes side by
   side through CUDA MPS) on the same photos; if MPS cannot start it is run once more without ``--mps``.
6. ``cudagraphs``: the step rows in mode ``cudagraphs`` (torch.compile, reduce-overhead), one process per batch
   size, last because compiling takes the longest (CUDA only).

Peak GPU memory is recorded for every benchmark row, every concurrent trial, and every epoch of the ``ktg train``
run and of each search trial. The targets of the performance issue are judged on a Hopper GPU (H100, H200).

On the lent GPU machine optuna is missing and nothing can be downloaded: fetch its wheels here first, carry
the folder, and name it with ``--wheels`` there (docs/performance.md has the exact commands)::

    python experiments/gpu_check.py --download-wheels .whl       # here, where pip reaches PyPI
    python3 experiments/gpu_check.py --wheels .whl --out $OUT     # there: at most ~8 minutes (the budget)
    python experiments/gpu_check.py --device cpu --quick --out /tmp/check   # anywhere, about a minute (CI)

This script imports nothing beyond the standard library until the wheels are in place, and it never starts
CUDA itself (MPS daemons start from here): every step is a process of its own.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
#: What ktg needs that the lent GPU machine's Python lacks (optuna and the packages it brings that the image
#: does not hold); carried as wheels, each at the version installed here.
WHEELS = ("optuna", "alembic", "SQLAlchemy", "Mako", "colorlog")
#: Folders where a GPU machine keeps the driver's programs (nvidia-cuda-mps-control) when they are not on PATH.
DRIVER_BIN_DIRS = ("/usr/local/nvidia/bin", "/usr/local/cuda/bin", "/usr/lib/nvidia/bin")
#: Each check that the CUDA tests make, by the test that makes it (names as pytest reports them).
TEST_CHECKS = {
    "zero host syncs in a training step": "test_a_training_step_reads_nothing_back_to_the_host",
    "photo batches cut without a host sync": "test_batches_on_the_device_equal_the_cpu_ones_without_waiting_for_it",
    "--deterministic bit-exact": "test_deterministic_steps_repeat_bit_for_bit",
    "CUDA-graph mode equal to eager": "test_cuda_graphs_replay_the_eager_step",
}
#: Seconds each step may take at most (the remaining budget may allow less): (full run, --quick).
STEP_LIMITS = {"environment": (60, 60), "tests": (150, 60), "benchmark": (270, 90), "train": (90, 60),
               "search": (150, 90), "cudagraphs": (120, 60)}
STEP_NAMES = tuple(STEP_LIMITS)


@dataclass(frozen=True)
class Scale:
    """The size of the check's own runs: the GPU check (``full``) or the minute-long CPU rehearsal (``quick``)."""

    image_size: int
    images: int
    classes: int
    batch_size: int
    width: int | None
    search_trials: int
    search_epochs: int
    #: experiments/benchmark.py's batch sizes of the step rows, its options for timing them, and for the
    #: concurrent trials.
    batch_sizes: tuple[str, ...]
    steps: tuple[str, ...]
    concurrency: tuple[str, ...]


FULL = Scale(image_size=224, images=400, classes=8, batch_size=16, width=None, search_trials=4, search_epochs=2,
             batch_sizes=("16", "64"), steps=("--warmup", "5", "--steps", "10", "--repeats", "3"),
             concurrency=("--jobs", "1", "4", "8", "--seconds", "10"))
QUICK = Scale(image_size=32, images=60, classes=6, batch_size=8, width=4, search_trials=2, search_epochs=1,
              batch_sizes=("16",), steps=("--quick", "--repeats", "1"),
              concurrency=("--jobs", "2", "--seconds", "0.5", "--big-batch-size", "32"))


# -- running the steps -----------------------------------------------------------------------------------


class Check:
    """The state of one run of the check: where it writes, the environment of its processes, the budget left
    and everything recorded so far (rewritten to ``gpu_check.json`` after every step)."""

    def __init__(self, args: argparse.Namespace, work: Path, env: dict[str, str]) -> None:
        self.args, self.work, self.env = args, work, env
        self.scale = QUICK if args.quick else FULL
        self.cuda = args.device.startswith("cuda")
        self.deadline = time.monotonic() + args.budget
        self.log = args.out / "gpu_check.log"
        self.results: dict[str, Any] = {
            "format": "ktg.gpu_check", "version": 1,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name, *sys.argv]), "device": args.device,
            "quick": args.quick, "budget_s": args.budget, "steps": {},
        }

    def save(self) -> None:
        from ktg.io import write_json

        write_json(self.args.out / "gpu_check.json", self.results)

    def run(self, name: str, command: list[str], *, step: str | None = None,
            env: dict[str, str] | None = None) -> dict[str, Any]:
        """Run ``command`` as ``name`` within the time limit of ``step`` (default: ``name``) and the budget;
        its output goes to the log. Returns its record (status ``ok``, ``failed`` or ``timed out``, seconds,
        exit code, the output's tail)."""
        limit = min(STEP_LIMITS[step or name][self.args.quick], self.deadline - time.monotonic())
        if limit < 5:
            return self.skip(name, "the budget (--budget) was spent by the steps before")
        with self.log.open("a", encoding="utf-8") as log:
            log.write(f"\n===== {name}: {' '.join(command)}\n")
        daemons = mps_folders()
        start = time.monotonic()
        # A session of its own: on time-out the whole group (search workers, benchmark fork server) is stopped.
        process = subprocess.Popen(command, cwd=ROOT, env={**self.env, **(env or {})}, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True)
        output, timed_out = communicate(process, limit)
        seconds = time.monotonic() - start
        quit_new_mps_daemons(daemons, self.env)
        with self.log.open("a", encoding="utf-8") as log:
            log.write(output)
        status = "timed out" if timed_out else ("ok" if process.returncode == 0 else "failed")
        record = {"status": status, "seconds": round(seconds, 1), "exit_code": process.returncode,
                  "limit_s": round(limit)}
        if status != "ok":
            record["output_tail"] = output[-3000:]
        print(f"  {name:<12}{status:<10}{seconds:7.1f} s", flush=True)
        self.results["steps"][name] = record
        self.save()
        return record

    def skip(self, name: str, reason: str) -> dict[str, Any]:
        record = {"status": "skipped", "reason": reason}
        print(f"  {name:<12}skipped: {reason}", flush=True)
        self.results["steps"][name] = record
        self.save()
        return record

    def fresh(self, name: str) -> Path:
        """The path ``name`` in the work folder, emptied of an earlier check's run (``--work`` may be reused)."""
        path = self.work / name
        shutil.rmtree(path, ignore_errors=True)
        return path

    def python(self, *arguments: str) -> list[str]:
        return [sys.executable, *arguments]

    def ktg(self, *arguments: str) -> list[str]:
        return self.python("-m", "ktg.cli", *arguments)


def communicate(process: subprocess.Popen, limit: float) -> tuple[str, bool]:
    """The output of ``process`` and whether it ran past ``limit`` seconds. A process past its limit gets
    SIGINT first (ktg stops cleanly on Ctrl-C: MPS daemon quit, trials queued again), SIGKILL 15 s later."""
    try:
        return process.communicate(timeout=limit)[0], False
    except subprocess.TimeoutExpired:
        pass
    for sig, grace in ((signal.SIGINT, 15), (signal.SIGKILL, 30)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            return process.communicate(timeout=grace)[0], True
        except subprocess.TimeoutExpired:
            continue
    return "", True


def mps_folders() -> set[Path]:
    """The private MPS daemons' folders (see :func:`ktg.mps.mps_daemon`) that exist now."""
    return set(Path(tempfile.gettempdir()).glob("ktg-mps-*"))


def quit_new_mps_daemons(before: set[Path], env: dict[str, str]) -> None:
    """Quit the daemons a step started and left running (it was killed before it could quit them), so that
    the next step starts its own on a GPU no other daemon holds."""
    control = shutil.which("nvidia-cuda-mps-control", path=env.get("PATH"))
    for folder in sorted(mps_folders() - before):
        if control and (folder / "pipe" / "control").exists():
            subprocess.run([control], input="quit\n", text=True, timeout=30, capture_output=True,
                           env={**env, "CUDA_MPS_PIPE_DIRECTORY": str(folder / "pipe")})


# -- the steps -----------------------------------------------------------------------------------------

ENVIRONMENT = """
import json, os, platform, shutil, subprocess, sys
import torch
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu_cores": os.cpu_count(), "cuda_available": torch.cuda.is_available(),
        "mps_control": shutil.which("nvidia-cuda-mps-control")}
if torch.cuda.is_available():
    device = torch.device(sys.argv[1] if sys.argv[1] != "auto" else "cuda")
    properties = torch.cuda.get_device_properties(device)
    info.update(gpu=properties.name, capability=".".join(map(str, torch.cuda.get_device_capability(device))),
                gpu_memory_gib=round(properties.total_memory / 2**30, 1),
                multiprocessors=properties.multi_processor_count)
    try:
        info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                        capture_output=True, text=True, timeout=30).stdout.split()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired) as error:
        info["driver"] = f"unknown ({error})"
for package in ("optuna", "torchvision", "numpy", "pytest"):
    try:
        info[package] = __import__(package).__version__
    except ImportError as error:
        info[package] = None
        info[package + "_error"] = str(error)
print("ENVIRONMENT " + json.dumps(info))
"""


def check_environment(check: Check) -> bool:
    """Step 1; False if the rest cannot run (no torch, no optuna, or no CUDA where CUDA was asked for)."""
    record = check.run("environment", check.python("-c", ENVIRONMENT, check.args.device))
    if record["status"] != "ok":
        return False
    lines = [line for line in check.log.read_text(encoding="utf-8").splitlines() if line.startswith("ENVIRONMENT ")]
    info = json.loads(lines[-1].removeprefix("ENVIRONMENT "))
    check.results["environment"] = info
    check.save()
    problem = None
    if info["optuna"] is None:
        problem = (f"optuna cannot be imported ({info['optuna_error']}): fetch its wheels where pip reaches PyPI "
                   f"(python experiments/gpu_check.py --download-wheels .whl), carry the folder and pass --wheels .whl")
    elif check.cuda and not info["cuda_available"]:
        problem = f"--device {check.args.device} was asked for, but PyTorch sees no CUDA GPU"
    if problem:
        record.update(status="failed", reason=problem)
        check.save()
        print(f"gpu_check: {problem}", file=sys.stderr)
        return False
    return True


def cuda_test_files() -> list[str]:
    """The test files that hold CUDA tests (marked ``cuda``; tests/conftest.py skips them without a GPU)."""
    return sorted(str(path.relative_to(ROOT)) for path in (ROOT / "tests").glob("test_*.py")
                  if "mark.cuda" in path.read_text(encoding="utf-8"))


def run_tests(check: Check) -> None:
    """Step 2: every CUDA test, each test's outcome kept (JUnit XML)."""
    report = check.work / "tests.xml"
    # cuBLAS reads its workspace setting once, at its first handle: fixed for the whole run, whichever test
    # comes first, so that the --deterministic test is bit-exact by construction.
    check.run("tests", check.python("-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                                    f"--junitxml={report}", *cuda_test_files()),
              env={"CUBLAS_WORKSPACE_CONFIG": ":4096:8"})
    if report.exists():
        check.results["tests"] = read_junit(report)
        check.save()


def read_junit(path: Path) -> list[dict[str, str]]:
    """Name, outcome (passed, failed, error or skipped) and message of every test in a JUnit XML report."""
    tests = []
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome, message = ("failed" if child.tag == "failure" else child.tag), child.get("message", "")
        tests.append({"name": case.get("name", ""), "outcome": outcome, "seconds": float(case.get("time", 0)),
                      "message": message[:500]})
    return tests


def test_checks(tests: list[dict[str, str]] | None) -> list[dict[str, Any]]:
    """Each check the CUDA tests make, met only if all its CUDA tests ran and passed."""
    rows = []
    for check, test in TEST_CHECKS.items():
        cases = [t for t in tests or [] if t["name"].split("[")[0] == test and
                 ("cuda" in t["name"] or "[" not in t["name"])]
        outcomes = sorted({t["outcome"] for t in cases})
        met = None if not cases or outcomes == ["skipped"] else outcomes == ["passed"]
        rows.append({"target": check, "value": ", ".join(outcomes) or "not run", "met": met,
                     "tests": [t["name"] for t in cases]})
    return rows


def prepare_data(check: Check) -> tuple[Path, Path]:
    """The synthetic photo tree and the heavy graph's file, both in the work folder. (The tree puts every fifth
    image in ``test/`` and image i in class i mod classes: a class count prime to 5 gives every class both.)"""
    from benchmark import heavy
    from benchmark_data import write_tree

    tree, graph = check.work / "photos", check.work / "heavy.json"
    write_tree(tree, check.scale.images, check.scale.classes)
    heavy(3).save(graph)
    return tree, graph


def data_options(check: Check, tree: Path) -> list[str]:
    scale = check.scale
    options = ["--dataset", "imagefolder", "--data-root", str(tree), "--cache-dir", str(check.work / "cache"),
               "--image-size", str(scale.image_size), "--batch-size", str(scale.batch_size),
               "--device", check.args.device, "--no-progress"]
    return options + (["--width", str(scale.width)] if scale.width else [])


def run_train(check: Check, tree: Path, graph: Path) -> None:
    """Step 4: the heavy graph, two epochs, through ``ktg train``."""
    out = check.fresh("train")
    record = check.run("train", check.ktg("train", "--graph", str(graph), "--epochs", "2", "--out", str(out),
                                          *data_options(check, tree)))
    if record["status"] == "ok":
        from ktg.run_folder import RunFolder

        run = RunFolder(out)
        final, epochs = run.read_metrics(), run.read_epochs()
        check.results["train"] = {
            "ensemble_accuracy": final.ensemble_accuracy, "node_accuracy": list(final.node_accuracy),
            "epochs": [{key: getattr(epoch, key) for key in ("epoch", "train_seconds", "images_per_second",
                                                             "peak_memory_mib")} for epoch in epochs]}
        check.save()


def run_search(check: Check, tree: Path) -> None:
    """Step 5: a two-worker search, through MPS on CUDA; without MPS once more if MPS could not start."""
    def search(name: str, mps: bool) -> dict[str, Any]:
        out = check.fresh(name)
        command = check.ktg("search", "--baseline", "none", "--rescore-top", "0", "--nodes", "3",
                            "--trials", str(check.scale.search_trials),
                            "--epochs", str(check.scale.search_epochs), "--jobs-per-device", "2",
                            *(["--mps"] if mps else []), "--out", str(out), *data_options(check, tree))
        record = check.run("search", command)
        record["mps"] = mps
        if record["status"] == "ok":
            check.results["search"] = read_search(out, mps)
        return record

    record = search("search", mps=check.cuda)
    if record["status"] != "ok" and check.cuda and "MPS" in record.get("output_tail", ""):
        check.results["search_with_mps"] = record
        search("search-without-mps", mps=False)
    check.save()


def read_search(out: Path, mps: bool) -> dict[str, Any]:
    """The finished search's trials, read from its study: state, accuracy, epochs and peak GPU memory."""
    from ktg.run_folder import RunFolder
    from ktg.search.keys import RUN_DIR_ATTR
    from ktg.search.results import last_value
    from ktg.search.settings import resolve_storage_url
    from ktg.search.storage import load_study

    trials = []
    for trial in load_study(resolve_storage_url(None, out), None).get_trials(deepcopy=False):
        epochs = RunFolder(trial.user_attrs[RUN_DIR_ATTR]).read_epochs() if RUN_DIR_ATTR in trial.user_attrs else []
        peaks = [epoch.peak_memory_mib for epoch in epochs if epoch.peak_memory_mib is not None]
        trials.append({"trial": trial.number, "state": trial.state.name.lower(), "epochs": len(epochs),
                       "ensemble_accuracy": last_value(trial), "peak_memory_mib": max(peaks) if peaks else None})
    return {"mps": mps, "trials": trials}


def run_benchmark(check: Check) -> None:
    """Step 3: the step rows (reference, fast), the concurrent trials (and through MPS), the projection."""
    out = check.work / "benchmark.json"
    command = check.python(str(EXPERIMENTS / "benchmark.py"), "--device", check.args.device, "--modes",
                           "reference", "fast", "--batch-sizes", *check.scale.batch_sizes, *check.scale.steps,
                           *check.scale.concurrency,
                           *(["--mps"] if check.cuda else []),
                           "--json", str(out))
    if check.run("benchmark", command)["status"] == "ok":
        check.results["benchmark"] = json.loads(out.read_text())
        check.save()


def run_cudagraphs(check: Check) -> None:
    """Step 6: the step rows in the CUDA-graph mode (on a CPU the mode is only inductor: skipped)."""
    if not check.cuda:
        check.skip("cudagraphs", "CUDA graphs need a CUDA GPU")
        return
    # One process per batch size: each compiles anew, and what one compiled is kept if the next runs out of time.
    for batch_size in check.scale.batch_sizes:
        out = check.work / f"cudagraphs-{batch_size}.json"
        command = check.python(str(EXPERIMENTS / "benchmark.py"), "--device", check.args.device, "--modes",
                               "cudagraphs", "--steps-only", "--batch-sizes", batch_size, *check.scale.steps,
                               "--json", str(out))
        if check.run(f"cudagraphs, batch {batch_size}", command, step="cudagraphs")["status"] == "ok":
            check.results.setdefault("cudagraphs", {})[batch_size] = json.loads(out.read_text())
            check.save()


# -- the verdict -----------------------------------------------------------------------------------------


def concurrency_targets(benchmark: dict[str, Any]) -> list[dict[str, Any]]:
    """Concurrent batch-16 trials against one batch-128 trial, through MPS (the target) and taking turns
    (stated beside it, not judged)."""
    settings, big = benchmark["settings"], benchmark["big_batch"].get("node_images_per_s")
    judged = any(t["met"] is not None for t in benchmark["summary"]["targets"])
    rows = []
    for mps, name in ((True, "through MPS"), (False, "taking turns (no MPS)")):
        rates = [r["node_images_per_s"] for r in benchmark["concurrency"]
                 if r["mps"] == mps and "node_images_per_s" in r]
        value = max(rates) / big if rates and big else None
        met = value >= 0.8 if judged and mps and value is not None else None
        rows.append({"target": f"best concurrent batch-{settings['jobs_batch_size']} trials {name} / one "
                               f"batch-{settings['big_batch_size']} trial",
                     "value": value, "limit": 0.8, "at_most": False, "met": met})
    return rows


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """Every target with its measured value and verdict (``met``: true, false, or None where not judged)."""
    steps = results["steps"]
    benchmark = results.get("benchmark")
    targets = []
    if benchmark:
        by_name = {t["target"]: t for t in benchmark["summary"]["targets"]}
        targets += [by_name["heavy step / independent step, fast, batch 64"],
                    by_name["fast / reference node-images/s, heavy, batch 16"]]
        targets += concurrency_targets(benchmark)
        targets.append(by_name["projected search hours"])
    targets += test_checks(results.get("tests"))
    search = results.get("search", {})
    finished = [t for t in search.get("trials", []) if t["state"] in ("complete", "pruned")]
    for name, step, detail in (
            ("ktg train end to end (heavy graph, 2 epochs, batch 16)", "train", ""),
            ("ktg search, 2 workers" + (" through MPS" if search.get("mps") else ""), "search",
             f"{len(finished)} of {len(search.get('trials', []))} trials finished" if search else "")):
        status = steps.get(step, {}).get("status", "not run")
        met = None if status in ("skipped", "not run") else status == "ok" and (step != "search" or bool(finished))
        targets.append({"target": name, "value": ", ".join(filter(None, (status, detail))), "met": met})
    return {"targets": targets, "all_steps_ok": all(s["status"] in ("ok", "skipped") for s in steps.values())}


def last_line(step: dict[str, Any]) -> str:
    """The last line a step that did not succeed printed (its error, as a rule), shortened for a table cell."""
    lines = [line.strip() for line in step.get("output_tail", "").splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def cell(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value).replace("|", "\\|")


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(cell(value) for value in row) + " |" for row in rows)]


def markdown(results: dict[str, Any]) -> str:
    """The check as Markdown: environment, targets, steps, then the measurements behind the targets."""
    env = results.get("environment", {})
    where = env.get("gpu") or f"CPU ({env.get('cpu_cores', '?')} cores)"
    lines = [f"# ktg GPU check: {where}, {results['date'][:10]}", "",
             f"torch {env.get('torch', '?')} (CUDA {env.get('cuda') or '—'}, cuDNN {env.get('cudnn') or '—'}), "
             f"driver {env.get('driver', '—')}, Python {env.get('python', '?')}, optuna {env.get('optuna') or '—'}; "
             f"`{results['command']}`", "", "## Targets", ""]
    verdicts = {True: "met", False: "**NOT met**", None: "not judged"}
    lines += table(["target", "limit", "measured", "verdict"],
                   [[t["target"], (f"{'≤' if t['at_most'] else '≥'} {t['limit']:g}" if "limit" in t else "pass"),
                     t["value"], verdicts[t["met"]]] for t in results["summary"]["targets"]])
    lines += ["", "## Steps", ""]
    lines += table(["step", "status", "seconds", "note"],
                   [[name, step["status"], step.get("seconds"), step.get("reason") or last_line(step)]
                    for name, step in results["steps"].items()])
    rows = [*results.get("benchmark", {}).get("rows", []),
            *(row for compiled in results.get("cudagraphs", {}).values() for row in compiled["rows"])]
    if rows:
        lines += ["", "## Training steps (experiments/benchmark.py)", ""]
        lines += table(["graph", "mode", "batch", "step ms", "node-img/s", "ops/step", "peak MiB"],
                       [[r["graph"], r["mode"], r["batch_size"], r["step_ms"], round(r["node_images_per_s"]),
                         r["operators_per_step"], r["peak_memory_mib"] and round(r["peak_memory_mib"])]
                        for r in rows])
    benchmark = results.get("benchmark", {})
    if "concurrency" in benchmark:
        lines += ["", "## Concurrent trials (random graph, fast mode)", ""]
        lines += table(["trials × batch", "MPS", "node-img/s", "peak MiB per trial"],
                       [[f"{r['jobs']} × {r['batch_size']}", "yes" if r["mps"] else "no",
                         round(r["node_images_per_s"]) if "node_images_per_s" in r else f"failed: {r['error']}",
                         round(max(filter(None, r.get("peak_memory_mib_per_job", [])), default=0)) or None]
                        for r in [*benchmark["concurrency"], benchmark["big_batch"]]])
        summary = benchmark["summary"]
        lines += ["", f"Recommended: `--jobs-per-device {summary['recommended_jobs_per_device']}"
                      f"{' --mps' if summary['recommended_mps'] else ''}`."]
    runs = []
    if "train" in results:
        train = results["train"]
        runs.append(["ktg train", cell(train["ensemble_accuracy"] * 100, 1) + " %",
                     max(filter(None, (e["peak_memory_mib"] for e in train["epochs"])), default=None),
                     f"{cell(train['epochs'][-1]['images_per_second'], 0)} images/s"])
    for trial in results.get("search", {}).get("trials", []):
        accuracy = trial["ensemble_accuracy"]
        runs.append([f"search trial {trial['trial']}", "—" if accuracy is None else cell(accuracy * 100, 1) + " %",
                     trial["peak_memory_mib"], f"{trial['state']} after epoch {trial['epochs']}"])
    if runs:
        lines += ["", "## ktg train and ktg search on synthetic photos", ""]
        lines += table(["run", "ensemble accuracy", "peak MiB", "note"],
                       [[name, accuracy, memory and round(memory), note] for name, accuracy, memory, note in runs])
    return "\n".join(lines) + "\n"


# -- wheels for a machine without optuna ---------------------------------------------------------------


def download_wheels(folder: Path, python_version: str) -> int:
    """Fetch the wheels of :data:`WHEELS` at the versions installed here, for the GPU machine's Python."""
    versions = [f"{name}=={importlib.metadata.version(name)}" for name in WHEELS]
    platforms = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
                 "manylinux1_x86_64"]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
               python_version, "--implementation", "cp", *(f"--platform={p}" for p in platforms), "-d", str(folder),
               *versions]
    done = subprocess.run(command)
    if done.returncode == 0:
        print(f"wheels for Python {python_version} in {folder}: {', '.join(versions)}")
    return done.returncode


def install_wheels(folder: Path, work: Path) -> Path:
    """Install the wheels in ``folder`` (offline, no dependencies) into a folder of ``work``; returns that folder,
    for PYTHONPATH."""
    wheels = sorted(folder.glob("*.whl"))
    site = work / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                           "--no-cache-dir", "--upgrade", "--target", str(site), *map(str, wheels)])
    if done.returncode != 0:
        raise SystemExit(f"gpu_check: pip could not install the wheels in {folder} (exit status {done.returncode})")
    return site


def child_environment(args: argparse.Namespace, work: Path) -> dict[str, str]:
    """The environment of every step: this checkout's ktg (and the carried wheels) importable, unbuffered output,
    and the driver's folders on PATH when nvidia-cuda-mps-control is not on it. ``--quick`` runs on one thread
    per process: its tiny models on a busy CPU otherwise spend their time handing work between threads."""
    paths = [str(install_wheels(args.wheels, work))] if args.wheels else []
    paths.append(str(ROOT))
    sys.path[:0] = [*paths, str(EXPERIMENTS)]  # this process reads the runs through ktg (it never starts CUDA)
    paths += filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
    if args.quick:
        env.setdefault("OMP_NUM_THREADS", "1")
    if shutil.which("nvidia-cuda-mps-control") is None:
        env["PATH"] = os.pathsep.join([env.get("PATH", ""), *(d for d in DRIVER_BIN_DIRS if Path(d).is_dir())])
    return env


# -- the command ---------------------------------------------------------------------------------------


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default: cuda)")
    parser.add_argument("--quick", action="store_true", help="tiny models, tiny data, few steps: about a minute "
                        "on a CPU (CI runs --device cpu --quick)")
    parser.add_argument("--out", type=Path, default=Path("gpu_check"),
                        help="folder for gpu_check.json, gpu_check.md and gpu_check.log (default: gpu_check)")
    parser.add_argument("--work", type=Path, help="folder for the runs, the data and the caches (default: a "
                        "temporary folder, removed at the end)")
    parser.add_argument("--budget", type=float, help="seconds for all steps together (default: 450; --quick: 150)")
    parser.add_argument("--steps", nargs="+", choices=STEP_NAMES[1:], default=STEP_NAMES[1:], metavar="STEP",
                        help=f"run only these steps (the environment is always read), e.g. to rerun what failed: "
                        f"{' '.join(STEP_NAMES[1:])} (default: all)")
    parser.add_argument("--wheels", type=Path, help="install the wheels in this folder (optuna and what it needs, "
                        "fetched with --download-wheels) offline for the steps, where the machine lacks them")
    parser.add_argument("--download-wheels", type=Path, metavar="FOLDER",
                        help="only fetch those wheels into FOLDER (where pip reaches PyPI), then exit")
    parser.add_argument("--python-version", default="3.12",
                        help="with --download-wheels: the GPU machine's Python (default: 3.12)")
    return parser


def main(args: argparse.Namespace) -> int:
    if args.download_wheels:
        return download_wheels(args.download_wheels, args.python_version)
    if args.wheels and not any(args.wheels.glob("*.whl")):
        raise SystemExit(f"gpu_check: no wheels in {args.wheels}; fetch them with --download-wheels {args.wheels}")
    if args.budget is None:
        args.budget = 150.0 if args.quick else 450.0
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="ktg-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    check = Check(args, work, child_environment(args, work))
    check.log.write_text("", encoding="utf-8")
    print(f"gpu_check on {args.device}{' (quick)' if args.quick else ''}, budget {args.budget:g} s; runs in {work}",
          flush=True)
    try:
        if check_environment(check):
            if "tests" in args.steps:
                run_tests(check)
            if "benchmark" in args.steps:
                run_benchmark(check)
            if {"train", "search"} & set(args.steps):
                tree, graph = prepare_data(check)
                if "train" in args.steps:
                    run_train(check, tree, graph)
                if "search" in args.steps:
                    run_search(check, tree)
            if "cudagraphs" in args.steps:
                run_cudagraphs(check)
    finally:
        check.results["summary"] = summarise(check.results)
        check.save()
        report = markdown(check.results)
        (args.out / "gpu_check.md").write_text(report, encoding="utf-8")
        print("\n" + report)
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if check.results["summary"]["all_steps_ok"] else 1


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
