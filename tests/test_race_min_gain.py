"""experiments/race_min_gain.py: stored races replayed with smallest gains, nothing retrained."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "race_min_gain.py"


def replay(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=ROOT)


def test_the_digits_tie_ends_sooner_with_a_smallest_gain_and_keeps_its_verdict():
    done = replay("docs/results/digits-30-verdict.json", "--min-gains", "0", "1")
    assert done.returncode == 0, done.stderr
    rows = [line.split(" | ") for line in done.stdout.splitlines()[2:]]
    assert {row[1] for row in rows} == {"every-seed, 95.00 % at 28"}  # replayed as it ran: 95 % after every seed
    assert [(row[2], row[3], row[4], row[6]) for row in rows] == [
        ("0", "independent (baseline, trial 0)", "trial 20: -0.13 [-0.97, +0.70] over 30 paired seeds", "66 |"),
        ("1", "independent (baseline, trial 0)", "trial 20: +0.13 [-0.72, +0.98] over 23 paired seeds", "52 |")]


def test_a_folder_without_a_race_is_a_one_line_error(tmp_path):
    done = replay(tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("race_min_gain.py: error: ")
    assert len(done.stderr.strip().splitlines()) == 1
