"""Named training recipes: one rule between a recipe, the command line (or a chain file) and a dataset's
suggestions, the rule stated in --help, and the recipe's name and values recorded with the run."""

import json

import pytest

from ktg.chain import plan_chain
from ktg.cli import build_parser, main, plan
from ktg.cli.search import search_settings_from_args
from ktg.config import TrainConfig
from ktg.data import DataSource
from ktg.errors import KTGError
from ktg.graph import GraphSpec
from ktg.registry import RECIPES
from ktg.run_folder import RunFolder

DIGITS = {"batch_size": 4, "lr": 0.01, "epochs": 5}  # what digits suggests (ktg.data)


def test_explicit_options_override_the_recipe_which_overrides_the_dataset():
    config = TrainConfig.from_recipe("paper", {"epochs": 240, "weight_decay": 5e-4}, DIGITS)
    assert (config.epochs, config.weight_decay) == (240, 5e-4)  # given
    assert (config.batch_size, config.lr, config.momentum) == (16, 0.1, 0.9)  # the recipe's, over digits'
    assert config.recipe == "paper" and config.amp is False and config.milestones == (150, 225)
    assert TrainConfig.from_recipe(None, {}, DIGITS) == TrainConfig(**DIGITS)  # no recipe: the dataset's
    assert TrainConfig.from_recipe("paper-bf16", {}).amp is True


def test_an_explicit_schedule_replaces_the_recipes_whole_schedule():
    cosine = TrainConfig.from_recipe("paper", {"schedule": "cosine"})
    assert (cosine.schedule, cosine.milestones, cosine.gamma) == ("cosine", (), TrainConfig().gamma)
    retimed = TrainConfig.from_recipe("paper", {"epochs": 30, "milestones": (15, 25)})
    assert (retimed.schedule, retimed.milestones, retimed.gamma) == ("step", (15, 25), 0.1)
    with pytest.raises(KTGError, match="--milestones 150 225: each must be .* below --epochs 30"):
        TrainConfig.from_recipe("paper", {"epochs": 30})  # shorter runs say where their rate drops


def test_an_unknown_recipe_names_the_known_ones():
    with pytest.raises(KTGError, match="unknown --recipe 'papers'; choose one of: paper, paper-bf16"):
        TrainConfig.from_recipe("papers", {})
    with pytest.raises(KTGError, match="unknown --recipe"):
        TrainConfig(recipe="papers")


def test_every_recipe_names_real_training_options():
    for record in RECIPES.values():
        config = TrainConfig.from_recipe(record.name, {})
        assert {key: getattr(config, key) for key in record.train} == record.train
        assert set(record.node_options) <= {"attention_residual"}


def test_the_search_takes_the_recipe_and_its_node_options_under_explicit_ones():
    def search(*flags):
        return search_settings_from_args(build_parser().parse_args(["search", "--dataset", "digits", *flags]))

    settings = search("--recipe", "paper", "--lr", "0.05")
    assert (settings.config.lr, settings.config.batch_size, settings.config.recipe) == (0.05, 16, "paper")
    assert settings.node_options == {"base_width": 8, "attention_residual": False}  # digits' width, the recipe's M·g
    assert search("--recipe", "paper", "--attention-residual").node_options["attention_residual"] is True
    assert "attention_residual" not in search().node_options


@pytest.mark.parametrize("command", ["train", "search"])
def test_help_states_the_rule_the_recipes_and_the_datasets_suggestions(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "An option given explicitly overrides the recipe's value (--recipe)" in text
    assert "paper: the papers' fine-grained recipe in fp32" in text and "milestones 150 225" in text
    assert "paper-bf16: the papers' recipe with ktg's bf16 autocast trunk" in text
    assert "digits: batch_size 4, lr 0.01, epochs 5, base_width 8" in text
    assert ("cifar10: holdout 0.2" in text) == (command == "search")


def test_a_run_records_the_recipe_its_values_and_the_precision_it_trained_in(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--recipe", "paper-bf16", "--nodes", "2", "--epochs", "1", "--schedule", "constant",
                 "--batch-size", "8", "--dataset", "synthetic", "--image-size", "16", "--dataset-option",
                 "train_size=16", "--dataset-option", "test_size=8", "--dataset-option", "num_classes=2",
                 "--width", "4", "--device", "cpu", "--no-progress", "--out", str(out)]) == 0
    config = RunFolder(out).read_config()
    train = config.train
    assert (train.recipe, train.amp, train.lr, train.weight_decay) == ("paper-bf16", True, 0.1, 1e-4)
    assert (train.epochs, train.batch_size, train.schedule, train.milestones) == (1, 8, "constant", ())
    assert config.provenance.precision == "bf16 autocast" and config.provenance.device == "cpu"
    assert all(not node.options["attention_residual"] for node in GraphSpec.load(out / "graph.json").nodes)


def test_a_chain_applies_its_recipe_by_the_rule_of_ktg_train(tmp_path):
    chain = {"format": "ktg.chain", "version": 1, "train": {"recipe": "paper", "epochs": 4, "milestones": [2]},
             "stages": [{"name": "teacher", "graph": "independent", "nodes": 1},
                        {"name": "student", "graph": "independent", "nodes": 1,
                         "train": {"lr": 0.05, "milestones": [3]}}]}
    teacher, student = plan_chain(chain, tmp_path, DataSource("digits"), overrides={"device": "cpu"},
                                  node_options={"base_width": 4})
    planned = plan(["train", "--dataset", "digits", "--graph", "independent", "--nodes", "1", "--recipe", "paper",
                    "--epochs", "4", "--milestones", "2", "--device", "cpu", "--width", "4"])
    assert teacher.plan == planned  # a stage is planned as ktg train plans a run
    config = teacher.plan.config  # the recipe's values over digits' lr 0.01, weight decay 5e-4 and cosine schedule
    assert (config.lr, config.weight_decay, config.batch_size, config.recipe) == (0.1, 1e-4, 16, "paper")
    assert (config.schedule, config.milestones, config.epochs) == ("step", (2,), 4)
    assert teacher.plan.graph_at(32).nodes[0].options == {"base_width": 4, "attention_residual": False}
    config = student.plan.config  # the stage's own options over the chain's, both over the recipe
    assert (config.lr, config.weight_decay, config.schedule, config.milestones) == (0.05, 1e-4, "step", (3,))
    assert config.recipe == "paper" and student.plan.graph.nodes[0].options["attention_residual"] is False


def write_chain(path, train):
    path.write_text(json.dumps({"format": "ktg.chain", "version": 1, "train": train,
                                "stages": [{"name": "only", "graph": "independent", "nodes": 1}]}))
    return path


CHAIN_DATA = ["--dataset", "synthetic", "--image-size", "16", "--dataset-option", "train_size=16", "--dataset-option",
              "test_size=8", "--dataset-option", "num_classes=2", "--width", "4", "--device", "cpu", "--no-progress"]


def test_a_chain_run_records_the_recipe_it_trained_with(tmp_path):
    chain = write_chain(tmp_path / "chain.json", {"recipe": "paper", "epochs": 2, "milestones": [1], "batch_size": 8})
    assert main(["chain", str(chain), "--out", str(tmp_path / "out"), *CHAIN_DATA]) == 0
    train = RunFolder(tmp_path / "out" / "only").read_config().train
    assert (train.recipe, train.lr, train.weight_decay, train.schedule, train.milestones) == (
        "paper", 0.1, 1e-4, "step", (1,))
    assert (train.amp, train.epochs, train.batch_size) == (False, 2, 8)
    assert all(not node.options["attention_residual"]
               for node in GraphSpec.load(tmp_path / "out" / "only" / "graph.json").nodes)


@pytest.mark.parametrize("train, error", [
    ({"recipe": "paper", "epochs": 1},
     "ktg: error: stage 'only': --milestones 150 225: each must be at least 1 and below --epochs 1"),
    ({"recipe": "papers"}, "train: unknown recipe 'papers'; choose one of: paper, paper-bf16"),
])
def test_a_chain_refuses_a_recipe_it_cannot_apply_in_one_line(tmp_path, capsys, train, error):
    chain = write_chain(tmp_path / "chain.json", train)
    assert main(["chain", str(chain), "--out", str(tmp_path / "out"), *CHAIN_DATA]) == 2
    printed = capsys.readouterr().err
    assert error in printed and printed.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_script_asks_ktg_what_a_command_line_would_train_and_is_refused_as_the_command_would_refuse(tmp_path):
    planned = plan(["train", "--dataset", "digits", "--recipe", "paper", "--width", "4", "--epochs", "3",
                    "--milestones", "1"])
    assert (planned.config.lr, planned.config.epochs, planned.source) == (0.1, 3, DataSource("digits"))
    assert planned.graph.name == "dml" and planned.graph_at(8).nodes[0].options == {"base_width": 4,
                                                                                     "attention_residual": False}
    searched = plan(["search", "--dataset", "digits", "--recipe", "paper", "--out", str(tmp_path / "search")])
    assert searched.space.name == "paper" and searched.config.holdout == 0.5  # the recipe's protocol, digits' holdout
    for argv, message in ((["train", "--dataset", "digits", "--epochs", "x"], "invalid int value"),
                          (["train", "--lr", "0.1"], "--dataset is required"),
                          (["eval", "--run", str(tmp_path)], "only train and search command lines have a plan")):
        with pytest.raises(KTGError, match=message):
            plan(argv)
