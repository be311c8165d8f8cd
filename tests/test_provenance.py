"""Provenance: the git commit a run records is the checkout ktg runs from, or none, never an error."""

import shutil
import subprocess
from pathlib import Path

import pytest

import ktg
from ktg.provenance import git_state

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True, text=True).stdout.strip()


@needs_git
def test_the_commit_and_whether_tracked_files_changed_are_those_of_the_checkout(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git(tmp_path, "add", "code.py")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    (tmp_path / "untracked.txt").write_text("not code\n")
    assert git_state.__wrapped__(tmp_path) == (git(tmp_path, "rev-parse", "HEAD"), False)
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_state.__wrapped__(tmp_path) == (git(tmp_path, "rev-parse", "HEAD"), True)
    # A folder inside a checkout is not its top: a package installed there is not that repository's code.
    (tmp_path / "site-packages").mkdir()
    assert git_state.__wrapped__(tmp_path / "site-packages") == (None, None)


def test_outside_a_checkout_there_is_no_commit(tmp_path, monkeypatch):
    assert git_state.__wrapped__(tmp_path) == (None, None)
    monkeypatch.setenv("PATH", str(tmp_path))  # no git to run at all
    assert git_state.__wrapped__(Path(ktg.__file__).resolve().parent.parent) == (None, None)
