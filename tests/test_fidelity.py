"""``ktg study fidelity``: how well each epoch's ranking of a study's trials predicts the final ranking, from trials
whose intermediate values are written here, so the numbers are known exactly."""

import csv
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from ktg.cli import main
from ktg.search.fidelity import fidelity, format_report, rank_correlation

optuna.logging.set_verbosity(optuna.logging.WARNING)

FINAL = [0.1 * (number + 1) for number in range(8)]  # trial n ends at (n + 1)/10: trial 7 is the best


def add_trials(study: optuna.Study) -> None:
    """Eight complete trials whose epoch 1 ranks them backwards, epoch 2 exactly, epoch 3 with the two best swapped,
    epoch 4 all alike, epoch 5 reached by two only; then a pruned, a running and a failed trial with scores."""
    for number, final in enumerate(FINAL):
        steps = {1: 1.0 - final, 2: final / 2, 3: final if number < 6 else 1.5 - final, 4: 0.5, 6: final}
        if number < 2:
            steps[5] = final
        study.add_trial(create_trial(value=final, intermediate_values=steps))
    study.add_trial(create_trial(state=TrialState.PRUNED, intermediate_values={1: 0.99, 2: 0.01}))
    study.add_trial(create_trial(state=TrialState.RUNNING, intermediate_values={1: 0.5}))
    study.add_trial(create_trial(state=TrialState.FAIL, intermediate_values={1: 0.5, 2: 0.5}))


def test_each_epoch_is_compared_with_the_final_ranking_of_the_complete_trials():
    study = optuna.create_study(direction="maximize")
    add_trials(study)
    result = fidelity(study.get_trials())
    assert (result.complete, result.pruned, result.running) == (8, 1, 1)
    by_epoch = {row.epoch: row for row in result.epochs}
    assert list(by_epoch) == [1, 2, 3, 4, 5, 6]
    assert by_epoch[1].rho == pytest.approx(-1.0) and (by_epoch[1].top_k, by_epoch[1].kept) == (2, 0)
    assert by_epoch[2].rho == pytest.approx(1.0) and by_epoch[2].kept == 2
    # One adjacent pair swapped in 8: rho = 1 - 6·(1 + 1)/(8·63).
    assert by_epoch[3].rho == pytest.approx(1 - 12 / 504) and by_epoch[3].kept == 2
    assert by_epoch[4].rho is None and by_epoch[4].kept == 0  # all alike: the top 2 by trial number are 0 and 1
    assert (by_epoch[5].trials, by_epoch[5].rho, by_epoch[5].top_k, by_epoch[5].kept) == (2, None, 1, 1)
    assert [row.pruned for row in result.epochs] == [1, 1, 0, 0, 0, 0]
    assert all(row.trials == 8 for row in result.epochs if row.epoch != 5)

    report = format_report(result)
    lines = report.splitlines()
    assert lines[0].split() == ["epoch", "trials", "Spearman", "rho", "top-k", "kept", "pruned,", "left", "out"]
    assert lines[1].split() == ["1", "8", "-1.00", "0", "of", "2", "1"]
    assert lines[5].split() == ["5", "2", "n/a", "1", "of", "1", "0"]
    assert lines[7].startswith("top-k kept: how many of the k best trials at the end were among the k best")
    assert lines[8] == ("left out: 1 pruned trial without a final value; each row ranks only the trials the pruner "
                        "let finish (selection bias): a study searched with --pruner none measures them all")
    assert lines[9] == "skipped: 1 trial still running or waiting"


def test_rank_correlation_is_undefined_under_three_trials_or_for_constant_values():
    assert rank_correlation([0.1, 0.2], [0.1, 0.2]) is None
    assert rank_correlation([0.5, 0.5, 0.5], [0.1, 0.2, 0.3]) is None
    assert rank_correlation([0.1, 0.2, 0.3], [0.7, 0.7, 0.7]) is None
    assert rank_correlation([0.1, 0.3, 0.2], [0.1, 0.2, 0.3]) == pytest.approx(0.5)


def test_the_command_prints_and_writes_the_rows_of_a_study_in_a_database(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    add_trials(optuna.create_study(study_name="measured", storage=storage, direction="maximize"))
    assert main(["study", "fidelity", "--storage", str(tmp_path / "study.db"), "--csv", str(tmp_path / "f.csv")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("study 'measured' in sqlite:///") and "8 complete trials" in printed[0]
    assert printed[4].split() == ["3", "8", "0.98", "2", "of", "2", "0"]
    assert printed[-1] == f"rows written to {tmp_path / 'f.csv'}"
    rows = list(csv.DictReader((tmp_path / "f.csv").open()))
    assert rows[0] == {"epoch": "1", "trials": "8", "spearman_rho": "-1.0", "top_k": "2", "top_k_kept": "0",
                       "pruned_left_out": "1"}
    assert [row["spearman_rho"] for row in rows[3:5]] == ["", ""]


def test_a_study_without_a_complete_trial_has_nothing_to_rank(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="young", storage=storage, direction="maximize")
    study.add_trial(create_trial(state=TrialState.RUNNING, intermediate_values={1: 0.5}))
    assert main(["study", "fidelity", "--storage", storage]) == 2
    assert capsys.readouterr().err.strip() == ("ktg: error: study 'young' has no complete trial yet: each epoch's "
                                               "ranking is compared with the final one, a complete trial's")


def test_reading_a_study_for_its_fidelity_imports_no_torch():
    code = ("import sys, ktg.cli.study, ktg.search.fidelity, ktg.search.storage; "
            "print(sorted({'torch', 'matplotlib', 'tensorboard'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr
