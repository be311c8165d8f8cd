"""The MPS daemon's lifecycle, against a stand-in for nvidia-cuda-mps-control that does what the real one does
to its pipe directory (the real daemon needs an NVIDIA GPU) and writes down every call it gets."""

import os
import stat
import tempfile
from pathlib import Path

import pytest

from ktg.errors import KTGError
from ktg.runtime.mps import LOG_VARIABLE, PIPE_VARIABLE, mps_daemon, running_daemon

FAKE_CONTROL = """#!/bin/sh
if [ "$1" = "-d" ]; then
    echo "start $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY" >> "$FAKE_MPS_CALLS"
    if [ -n "$FAKE_MPS_REFUSE" ]; then echo "$FAKE_MPS_REFUSE" >&2; exit 1; fi
    touch "$CUDA_MPS_PIPE_DIRECTORY/control"
    exit 0
fi
read command
echo "$command $CUDA_MPS_PIPE_DIRECTORY" >> "$FAKE_MPS_CALLS"
rm -f "$CUDA_MPS_PIPE_DIRECTORY/control"
"""


@pytest.fixture
def calls(tmp_path, monkeypatch) -> Path:
    """Put the stand-in first on PATH, with no daemon running; the file it writes its calls to."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    control = bin_dir / "nvidia-cuda-mps-control"
    control.write_text(FAKE_CONTROL)
    control.chmod(control.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv(PIPE_VARIABLE, str(tmp_path / "no-daemon-here"))
    monkeypatch.delenv(LOG_VARIABLE, raising=False)
    monkeypatch.setenv("FAKE_MPS_CALLS", str(tmp_path / "calls.txt"))
    return tmp_path / "calls.txt"


def test_a_private_daemon_serves_the_block_and_quits_after_it(calls, tmp_path):
    assert running_daemon() is None
    with mps_daemon() as variables:
        pipes = Path(variables[PIPE_VARIABLE])
        assert os.environ[PIPE_VARIABLE] == str(pipes) and os.environ[LOG_VARIABLE] == variables[LOG_VARIABLE]
        assert running_daemon() == pipes and pipes.is_relative_to(tempfile.gettempdir())
        assert calls.read_text().splitlines() == [f"start {pipes} {variables[LOG_VARIABLE]}"]
    assert calls.read_text().splitlines()[1:] == [f"quit {pipes}"]
    assert os.environ[PIPE_VARIABLE] == str(tmp_path / "no-daemon-here") and LOG_VARIABLE not in os.environ
    assert not pipes.parent.exists()  # the private folder is gone


def test_the_daemon_quits_when_the_block_fails(calls):
    with pytest.raises(RuntimeError, match="a trial crashed"):
        with mps_daemon() as variables:
            raise RuntimeError("a trial crashed")
    assert calls.read_text().splitlines()[-1] == f"quit {variables[PIPE_VARIABLE]}"
    assert not Path(variables[PIPE_VARIABLE]).exists()


def test_a_daemon_that_refuses_to_start_is_a_clear_error_that_leaves_nothing(calls, monkeypatch):
    monkeypatch.setenv("FAKE_MPS_REFUSE", "An instance of this daemon is already running")
    with pytest.raises(KTGError, match="did not start .*exit status 1.*already running.*without MPS"):
        with mps_daemon():
            pytest.fail("the block must not run")
    (started,) = calls.read_text().splitlines()
    assert not Path(started.split()[1]).parent.exists()


def test_a_missing_control_program_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv(PIPE_VARIABLE, str(tmp_path / "no-daemon-here"))
    with pytest.raises(KTGError, match="needs nvidia-cuda-mps-control .* on PATH"):
        with mps_daemon():
            pytest.fail("the block must not run")


def test_a_running_daemon_is_used_as_it_is_and_left_running(calls, tmp_path, monkeypatch):
    pipes = tmp_path / "system-mps"
    pipes.mkdir()
    (pipes / "control").touch()
    monkeypatch.setenv(PIPE_VARIABLE, str(pipes))
    with mps_daemon() as variables:
        assert variables == {PIPE_VARIABLE: str(pipes)}
    assert not calls.exists() and (pipes / "control").exists()
