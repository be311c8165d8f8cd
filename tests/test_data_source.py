"""The data a run was trained on, as a value, what a dataset suggests where the user gives no value, and the
registry of datasets."""

import pytest
import torch

import ktg.data
from ktg.cli import main, plan
from ktg.config import TrainConfig
from ktg.data import DatasetDefaults, DataSource, dataset_defaults, dataset_record, list_datasets, load_dataset
from ktg.data.synthetic import load_synthetic, synthetic_preprocessing
from ktg.errors import KTGError
from ktg.plan import training_config
from ktg.registry import resolve
from ktg.run_folder import RunFolder

SYNTHETIC = DataSource("synthetic", image_size=16, options={"train_size": 32, "test_size": 16, "num_classes": 4})


def test_a_source_round_trips_through_its_json_form_and_loads_what_it_says():
    assert DataSource.from_dict(SYNTHETIC.to_dict()) == SYNTHETIC
    assert DataSource.from_dict({"name": "digits"}) == DataSource("digits")
    dataset = SYNTHETIC.load()
    assert dataset.source == SYNTHETIC and dataset.image_size == 16 and len(dataset.train) == 32
    assert load_dataset("synthetic", image_size=16, train_size=32, test_size=16, num_classes=4).source == SYNTHETIC


def test_digits_suggest_narrow_nodes_and_an_option_given_wins(tmp_path):
    assert dataset_defaults("digits").with_node_options({"base_width": 4}) == {"base_width": 4}
    assert main(["train", "--dataset", "digits", "--image-size", "8", "--holdout", "0.95", "--nodes", "2",
                 "--epochs", "1", "--batch-size", "32", "--device", "cpu", "--no-progress",
                 "--out", str(tmp_path)]) == 0
    run = RunFolder(tmp_path)
    assert {node.options["base_width"] for node in run.read_graph().nodes} == {8}
    assert run.read_config().data == DataSource("digits", image_size=8)


def test_suggested_training_values_fill_only_the_options_left_out():
    suggested = DatasetDefaults(train={"epochs": 7, "lr": 0.05}).train
    config = training_config(DataSource("synthetic"), given={"epochs": 2}, suggested=suggested)
    assert (config.epochs, config.lr, config.batch_size) == (2, 0.05, TrainConfig().batch_size)
    assert plan(["train", "--dataset", "synthetic"]).config == TrainConfig()  # synthetic suggests nothing


def test_digits_suggest_short_runs_that_learn_and_an_option_given_wins():
    config = plan(["train", "--dataset", "digits"]).config
    assert (config.batch_size, config.lr, config.epochs) == (4, 0.01, 5) == tuple(
        dataset_defaults("digits").train[key] for key in ("batch_size", "lr", "epochs"))
    config = plan(["train", "--dataset", "digits", "--batch-size", "64"]).config
    assert (config.batch_size, config.lr) == (64, 0.01)


def test_defaults_may_name_only_training_options_and_a_fraction_to_hold_out():
    with pytest.raises(ValueError, match="learning_rate"):
        DatasetDefaults(train={"learning_rate": 0.1})
    with pytest.raises(ValueError, match="search_holdout must lie strictly between 0 and 1, got 1"):
        DatasetDefaults(search_holdout=1)


@pytest.mark.parametrize("name", list_datasets())
def test_every_dataset_names_a_loader_and_a_preprocessing_that_exist(name):
    record = dataset_record(name)
    assert callable(resolve(record.loader)) and callable(resolve(record.preprocessing))


def test_a_dataset_registered_with_the_decorator_loads_by_name(monkeypatch):
    monkeypatch.setattr(ktg.data, "_DATASETS", dict(ktg.data._DATASETS))  # registered for this test only

    @ktg.data.register_dataset("tiny", defaults=DatasetDefaults(train={"epochs": 2}),
                               preprocessing=synthetic_preprocessing)
    def load_tiny(root, image_size, *, classes: int = 2):
        return load_synthetic(root, image_size, train_size=8, test_size=4, num_classes=classes)

    assert "tiny" in list_datasets() and dataset_defaults("tiny").train == {"epochs": 2}
    dataset = load_dataset("tiny", image_size=8, classes=3)
    assert dataset.num_classes == 3 and dataset.source == DataSource("tiny", image_size=8, options={"classes": 3})
    assert dataset.source.preprocessing().stored_size == 8
    with pytest.raises(KTGError, match="dataset 'tiny' has no option 'colour'; its options are: classes"):
        load_dataset("tiny", colour=True)
    with pytest.raises(ValueError, match="registered twice"):
        ktg.data.register_dataset("tiny")(load_tiny)


def test_train_subset_keeps_a_stratified_part_of_the_training_split_and_is_saved_with_the_run(tmp_path):
    full = load_dataset("digits")
    for size, expected in ((0.1, 135), (300, 300)):
        part = load_dataset("digits", train_subset=size)
        assert abs(len(part.train) - expected) <= 10 and torch.equal(part.test.images, full.test.images)
        counts = torch.bincount(part.train.labels, minlength=10).float()
        assert (counts / len(part.train) - torch.bincount(full.train.labels).float() / len(full.train)).abs().max() \
            < 0.01  # every class in its share
        assert part.source.options == {"train_subset": size}
    other = load_dataset("digits", train_subset=0.1, train_subset_seed=1)
    assert not torch.equal(other.train.images, load_dataset("digits", train_subset=0.1).train.images)
    assert main(["train", "--dataset", "digits", "--image-size", "8", "--dataset-option", "train_subset=40",
                 "--nodes", "1", "--graph", "independent", "--epochs", "1", "--batch-size", "8", "--device", "cpu",
                 "--no-progress", "--out", str(tmp_path)]) == 0
    assert RunFolder(tmp_path).read_config().data.load().train.labels.shape[0] == 40
    for options, message in (({"train_subset": 1.5}, "fraction in \\(0, 1\\) or a whole number"),
                             ({"train_subset": 5000}, "keeps the whole training split"),
                             ({"train_subset_seed": 1}, "needs train_subset"),
                             ({"subset": 1}, "options are: train_subset, train_subset_seed")):
        with pytest.raises(KTGError, match=message):
            load_dataset("digits", **options)
