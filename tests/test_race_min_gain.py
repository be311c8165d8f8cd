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


def test_a_verdict_of_three_searched_graphs_replays_at_the_race_s_own_confidences():
    # the file holds the runs of one searched graph; its race shared the 5 % among 3, and so does the replay
    done = replay("docs/results/mnist20-dark-growing-verdict.json", "--min-gains", "1")
    assert done.returncode == 0, done.stderr
    (row,) = [line.split(" | ") for line in done.stdout.splitlines()[2:]]
    assert row[1] == "growing-shares, 99.98–98.93 % at 6"
    assert row[4] == "trial 71: -0.50 [-2.66, +1.66] over 8 paired seeds at 99.93 %"
