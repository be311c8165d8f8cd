"""The typed records of a run folder: files written before the records existed read back unchanged, and a file
that is not ktg's, or not finished, is named instead of read wrong."""

import json

import pytest

from ktg.config import TrainConfig
from ktg.data import DataSource
from ktg.errors import KTGError
from ktg.run_folder import EpochRecord, FinalMetrics, RunConfig, RunFolder

# Written by ktg 0.1.0 before run state had records (the keys of a digits run's files).
CONFIG_JSON = {"ktg_version": "0.1.0", "train": {**TrainConfig(epochs=2, milestones=(1,), schedule="step").to_dict()},
               "data": {"name": "digits", "root": None, "image_size": 8, "options": {}}, "eval_split": "val",
               "num_classes": 3, "classes": ["0", "1", "2"], "image_size": 8}
EPOCH_LINE = {"epoch": 1, "split": "val", "node_accuracy": [0.5, 0.25], "ensemble_accuracy": 0.5, "lr": 0.01,
              "train_loss": 1.5, "losses": {"label→0 ce/through": 1.5}, "gate_weights": {"label→0 ce/through": 1.0},
              "train_seconds": 2.0, "images_per_second": 100.0}
METRICS_JSON = {"dataset": "digits", "split": "val", "graph": "dml", "epochs": 1, "stopped_early": False,
                "node_accuracy": [0.5, 0.25], "ensemble_accuracy": 0.5, "mean_node_accuracy": 0.375,
                "best_ensemble_accuracy": 0.5, "best_epoch": 1}


def test_files_of_an_older_run_read_as_records_and_write_back_unchanged(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(CONFIG_JSON))
    (tmp_path / "metrics.json").write_text(json.dumps(METRICS_JSON))
    (tmp_path / "metrics.jsonl").write_text(json.dumps(EPOCH_LINE) + "\n")
    run = RunFolder(tmp_path)
    config, final, epochs = run.read_config(), run.read_metrics(), run.read_epochs()
    assert config.train.milestones == (1,) and config.data == DataSource("digits", image_size=8)
    assert config.classes == ("0", "1", "2") and final.node_accuracy == (0.5, 0.25) and final.best_epoch == 1
    assert epochs == [EpochRecord.from_dict(EPOCH_LINE)] and epochs[0].peak_memory_mib is None
    assert (config.to_dict(), final.to_dict(), epochs[0].to_dict()) == (CONFIG_JSON, METRICS_JSON, EPOCH_LINE)


@pytest.mark.parametrize("record, data, problem", [
    (RunConfig, {**CONFIG_JSON, "colour": "red"}, "has an unknown field 'colour'"),
    (RunConfig, {key: value for key, value in CONFIG_JSON.items() if key != "classes"}, "lacks the field 'classes'"),
    (FinalMetrics, [0.5], "is not a JSON object"),
])
def test_a_file_that_is_not_a_record_is_named(record, data, problem):
    with pytest.raises(KTGError, match=f"^somewhere/file.json {problem}"):
        record.from_dict(data, "somewhere/file.json")


def test_an_unknown_training_option_is_named():
    with pytest.raises(KTGError, match="unknown training option 'colour'"):
        RunConfig.from_dict({**CONFIG_JSON, "train": {**CONFIG_JSON["train"], "colour": "red"}})


def test_an_epoch_line_still_being_written_is_left_out(tmp_path):
    whole = json.dumps(EPOCH_LINE) + "\n"
    (tmp_path / "metrics.jsonl").write_text(whole + whole.replace('"epoch": 1', '"epoch": 2')[:40])
    assert [record.epoch for record in RunFolder(tmp_path).read_epochs()] == [1]
