"""experiments/race_error.py: simulated races replayed by the race's own code."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "race_error.py"


def simulate(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=ROOT)


def test_every_way_of_reading_a_race_runs_the_same_races_and_those_at_looks_in_fewer_rounds():
    done = simulate("--scenarios", "gain 2", "--paired-sd", "1.5", "--races", "20",
                    "--readings", "every-seed", "growing-shares")
    assert done.returncode == 0, done.stderr
    rows = [line.strip("|").split(" | ") for line in done.stdout.splitlines() if line.startswith("| gain 2")]
    assert [row[2] for row in rows] == ["every-seed", "growing-shares"]
    (_, _, _, kept_before, first_before, runs_before, rounds_before), (*_, kept, first, runs, rounds) = rows
    # a gain of 2 points over a paired spread of 1.5 is found either way, at looks 3, 5, 8, … in fewer rounds
    assert kept_before == first_before == kept == first == "100.0 %"
    assert float(rounds.strip(" |")) < float(rounds_before.strip(" |"))
    assert float(runs.strip(" |")) >= float(runs_before.strip(" |"))


def test_bad_arguments_are_a_one_line_error():
    done = simulate("--races", "0")
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith("race_error.py: error: ")


@pytest.mark.slow
def test_a_race_read_at_its_looks_claims_a_gain_that_is_not_there_at_most_5_percent_of_the_time():
    done = simulate("--scenarios", "tie", "--paired-sd", "1.5", "--races", "300")
    assert done.returncode == 0, done.stderr
    kept = {row[2]: float(row[3].rstrip(" %")) for row in
            (line.strip("|").split(" | ") for line in done.stdout.splitlines() if line.startswith("| tie"))}
    # no searched graph gains: every one the race keeps is a false claim. Read after every seed at 95 %, the race
    # makes one far more often than 5 %; read at its looks, with either share of the 5 %, at most 5 %
    assert kept["every-seed"] > 10 and kept["even-shares"] <= 5 and kept["growing-shares"] <= 5


@pytest.mark.slow
def test_with_ten_searched_graphs_the_race_still_claims_a_gain_that_is_not_there_at_most_5_percent_of_the_time():
    done = simulate("--scenarios", "tie", "--paired-sd", "3", "--races", "300", "--top", "10",
                    "--readings", "growing-shares")
    assert done.returncode == 0, done.stderr
    (row,) = [line.strip("|").split(" | ") for line in done.stdout.splitlines() if line.startswith("| tie")]
    # each searched graph is a further chance of a false claim: the 5 % is shared among them too (shared among the
    # looks only, 1,000 such races claimed one 6.7 % of the time, docs/results.md)
    assert row[2] == "growing-shares" and float(row[3].rstrip(" %")) <= 5
