"""CUDA MPS (Multi-Process Service): the kernels of several processes run on one GPU at the same time instead
of taking turns.

At the paper's batch 16 one trial leaves a large GPU mostly idle, so several trials share it; time-sliced they
gain little, side by side under MPS much more (plain ABN-ResNet-18 processes on an H100, not ktg: four at
batch 16 reached ≈3,500 node-images/s taking turns, eight ≈6,700 through MPS; docs/performance.md, "Figures not
measured by ktg"). MPS is an optimisation, never a requirement: a CUDA
process joins the MPS daemon that serves its pipe directory if there is one and runs on its own otherwise.
:func:`mps_daemon` starts a private daemon for the processes started from here and quits it after. It never
changes the GPU's compute mode (that needs root and affects every user of the GPU).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from ktg.errors import KTGError

CONTROL = "nvidia-cuda-mps-control"
PIPE_VARIABLE = "CUDA_MPS_PIPE_DIRECTORY"
LOG_VARIABLE = "CUDA_MPS_LOG_DIRECTORY"
#: Where CUDA looks for the daemon when CUDA_MPS_PIPE_DIRECTORY is not set.
DEFAULT_PIPE_DIRECTORY = "/tmp/nvidia-mps"


def running_daemon() -> Path | None:
    """The pipe directory of the MPS daemon that CUDA processes started from here would join, or None."""
    pipes = Path(os.environ.get(PIPE_VARIABLE) or DEFAULT_PIPE_DIRECTORY)
    return pipes if (pipes / "control").exists() else None


@contextlib.contextmanager
def mps_daemon(timeout: float = 30.0) -> Iterator[dict[str, str]]:
    """Run the block with an MPS daemon serving the CUDA processes started from it.

    A daemon that already serves this environment is used as it is and left running. Otherwise a private one
    is started, with its pipes and logs in a fresh folder under the temporary directory, and quit when the
    block ends, however it ends. For the block, ``os.environ`` names the daemon's folders, so processes
    started with "spawn" join it; the yielded dict holds the same variables, for processes that were forked
    from a server started earlier (they set them before CUDA starts). This process should not start CUDA
    itself before the block if it is to join too.

    Raises:
        KTGError: ``nvidia-cuda-mps-control`` is not on PATH, or the daemon did not start.
    """
    existing = running_daemon()
    if existing is not None:
        yield {PIPE_VARIABLE: str(existing)}
        return
    control = shutil.which(CONTROL)
    if control is None:
        raise KTGError(f"CUDA MPS needs {CONTROL} (part of NVIDIA's driver) on PATH, and it is not; install it "
                       f"or run without MPS")
    folder = Path(tempfile.mkdtemp(prefix="ktg-mps-"))  # short: UNIX socket paths are limited to ~100 bytes
    variables = {PIPE_VARIABLE: str(folder / "pipe"), LOG_VARIABLE: str(folder / "log")}
    for path in variables.values():
        Path(path).mkdir()
    env = {**os.environ, **variables}
    try:
        _start(control, env, folder, timeout)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    previous = {key: os.environ.get(key) for key in variables}
    os.environ.update(variables)
    try:
        yield variables
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if _quit(control, env, folder, timeout):
            shutil.rmtree(folder, ignore_errors=True)


def _start(control: str, env: dict[str, str], folder: Path, timeout: float) -> None:
    # Output goes to a file, not a pipe: the daemon may keep a pipe open, and reading it would never end.
    output = folder / "start.txt"
    with output.open("w") as sink:
        try:
            status = subprocess.run([control, "-d"], env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink,
                                    timeout=timeout).returncode
        except (OSError, subprocess.TimeoutExpired) as error:
            raise KTGError(f"the CUDA MPS daemon did not start ({CONTROL} -d: {error}); run without MPS") from None
    socket = Path(env[PIPE_VARIABLE]) / "control"
    deadline = time.monotonic() + timeout
    while status == 0 and not socket.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if status != 0 or not socket.exists():
        said = output.read_text().strip() or _log_tail(Path(env[LOG_VARIABLE]))
        raise KTGError(f"the CUDA MPS daemon did not start ({CONTROL} -d: "
                       f"{f'exit status {status}' if status else f'no control socket after {timeout:g} s'})"
                       f"{': ' + said if said else ''}. Run without MPS, or ask your administrator whether "
                       f"MPS is allowed on this machine")


def _quit(control: str, env: dict[str, str], folder: Path, timeout: float) -> bool:
    """Ask the daemon to quit; on failure say how to stop it by hand (never raise: the block's own error,
    if any, is the one to report)."""
    try:
        status = subprocess.run([control], input="quit\n", text=True, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, timeout=timeout).returncode
    except (OSError, subprocess.TimeoutExpired) as error:
        status = str(error)
    if status == 0:
        return True
    print(f"ktg: warning: the CUDA MPS daemon in {folder} did not quit ({status}); stop it with: "
          f"echo quit | {PIPE_VARIABLE}={env[PIPE_VARIABLE]} {CONTROL}", file=sys.stderr)
    return False


def _log_tail(log_folder: Path, lines: int = 5) -> str:
    log = log_folder / "control.log"
    return " | ".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""
