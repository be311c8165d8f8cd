"""The registered search spaces (``ktg search --space``): each is a record and a command-line choice, holds the
graphs it says (counted exactly, every graph round-tripping through its parameters), and is part of the study's
identity."""

import itertools
import json

import optuna
import pytest
from test_search import DATA, SPACE, settings

from ktg.cli import build_parser
from ktg.cli.search import search_settings_from_args
from ktg.errors import KTGError
from ktg.graph import EdgeSpec, GraphSpec, NodeSpec, dml, resolve_graph
from ktg.registry import DEFAULT_SPACE, SPACES, space_names
from ktg.search.keys import SETTINGS_ATTR
from ktg.search.sampler import TrialSeededSampler
from ktg.search.space import SearchSpace
from ktg.search.worker import connect

optuna.logging.set_verbosity(optuna.logging.WARNING)


def search_args(*options: str):
    return build_parser().parse_args(["search", "--dataset", DATA.name, *options])


def test_every_space_is_a_record_a_command_line_choice_and_part_of_the_study(capsys):
    assert space_names() == tuple(SPACES) and {"paper", "labels-on", "shared", "dark"} <= set(SPACES)
    assert DEFAULT_SPACE == "labels-on" and search_settings_from_args(search_args()).space.name == DEFAULT_SPACE
    # The paper recipe searches as the papers did: their space, rungs from epoch 1; an option given still wins.
    paper = search_settings_from_args(search_args("--recipe", "paper", "--epochs", "300"))
    assert (paper.space.name, paper.rung) == ("paper", 1)
    given = search_settings_from_args(search_args("--recipe", "paper", "--epochs", "300", "--space", "shared",
                                                  "--first-rung", "100"))
    assert (given.space.name, given.rung) == ("shared", 100)
    # 70 % of a trial's run, rounded up: 13 of 18 epochs on half the images, as many steps as 9 on all of them.
    assert search_settings_from_args(search_args("--epochs", "9")).rung == 13
    assert search_settings_from_args(search_args("--epochs", "9", "--trial-length", "epochs")).rung == 7
    for name in SPACES:
        space = search_settings_from_args(search_args("--space", name)).space
        assert space == SearchSpace(num_nodes=3, name=name) and space.describe()["name"] == name
    with pytest.raises(SystemExit):
        build_parser().parse_args(["search", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "paper: the papers' space" in help_text and "(1.2e+10 graphs of 3 nodes)" in help_text
    assert "(1.9e+08 graphs of 3 nodes)" in help_text and "(1,140 graphs of 3 nodes)" in help_text
    assert "(380 graphs of 3 nodes)" in help_text
    with pytest.raises(KTGError, match="unknown search space 'tiny'; choose one of: paper, labels-on, shared, dark"):
        SearchSpace(num_nodes=3, name="tiny")


def test_sizes_for_three_nodes_and_readable_names():
    paper, labels_on, shared = (SearchSpace(num_nodes=3, name=name) for name in ("paper", "labels-on", "shared"))
    assert paper.size == 4**3 * 24**6 and labels_on.size == 24**6
    # 6 designs, 3 gates, 2⁶ on/off patterns, but with every edge off the shared gate is in no graph file
    assert shared.size == 6 * (3 * (2**6 - 1) + 1) == 1140
    assert list(shared.distributions()) == ["label→0 gate", "1→0 edge", "2→0 edge", "label→1 gate", "0→1 edge",
                                            "2→1 edge", "label→2 gate", "0→2 edge", "1→2 edge", "shared loss",
                                            "shared gate"]
    assert shared.distributions()["1→0 edge"].choices == ("on", "off")
    dark = SearchSpace(num_nodes=3, name="dark")
    assert dark.designs == ("dark_cos", "prob_kl") and dark.size == 2 * (3 * (2**6 - 1) + 1) == 380


def test_an_option_given_beats_the_space_which_beats_the_papers():
    labels_on = SearchSpace(num_nodes=3, name="labels-on")
    assert labels_on.label_gates == ("through",) and labels_on.designs == SearchSpace(num_nodes=3).designs
    given = search_settings_from_args(search_args("--space", "labels-on", "--label-gates", "through", "correct"))
    assert given.space.label_gates == ("through", "correct") and given.space.name == "labels-on"
    shared = search_settings_from_args(search_args("--space", "shared", "--designs", "prob_kl", "att_mse",
                                                   "--temperatures", "1", "4")).space
    assert (shared.designs, shared.gates, shared.label_gates) == (("prob_kl", "att_mse"),
                                                                   ("through", "linear", "correct"), ("through",))
    assert "shared temperature" in shared.distributions() and "1→0 temperature" not in shared.distributions()
    with pytest.raises(KTGError, match="'shared' switches each network edge on or off itself; drop cutoff"):
        SearchSpace(num_nodes=3, name="shared", gates=("through", "cutoff"))


SMALL = {  # every space on two nodes with few choices: small enough to enumerate every parameter setting
    "paper": {"designs": ("prob_kl", "att_mse"), "gates": ("through", "cutoff", "linear"),
              "label_gates": ("through", "linear"), "temperatures": (1.0, 2.0)},
    "labels-on": {"designs": ("prob_kl", "att_mse"), "models": ("abn_resnet20", "abn_resnet32")},
    "shared": {"designs": ("prob_kl", "att_mse", "att_cos"), "temperatures": (1.0, 2.0)},
    "dark": {"gates": ("through", "correct")},
}


@pytest.mark.parametrize("name", SMALL)
def test_size_counts_the_graph_files_and_every_graph_round_trips(name):
    space = SearchSpace(num_nodes=2, name=name, **SMALL[name])
    distributions = space.distributions()
    files = set()
    for choices in itertools.product(*(dist.choices for dist in distributions.values())):
        spec = space.from_params(dict(zip(distributions, choices)))
        assert space.from_params(space.to_params(spec)) == spec
        files.add(json.dumps(spec.to_dict(), sort_keys=True))
    assert len(files) == space.size


@pytest.mark.parametrize("name", SPACES)
def test_drawn_graphs_of_three_nodes_round_trip_through_their_files(name, tmp_path):
    space = SearchSpace(num_nodes=3, name=name, ensemble_as_source=True)
    study = optuna.create_study(sampler=TrialSeededSampler(seed=5), direction="maximize")
    for _ in range(8):
        trial = study.ask()
        spec = space.suggest(trial)
        spec.save(tmp_path / "graph.json")
        loaded = GraphSpec.load(tmp_path / "graph.json")
        assert space.from_params(space.to_params(loaded), name=spec.name) == spec
        assert all(gate == "through" for gate in spec.label_gates) or name == "paper"
        study.tell(trial, 0.0)


@pytest.mark.parametrize("name", SPACES)
@pytest.mark.parametrize("graph", ["independent", "dml"])
def test_independent_and_dml_are_graphs_of_every_space(name, graph):
    spec = resolve_graph(graph, 3)
    space = SearchSpace(num_nodes=3, name=name)
    found = space.from_params(space.to_params(spec))
    assert (found.label_gates, found.active_edges) == (spec.label_gates, spec.active_edges)


def test_graphs_outside_a_space_are_refused():
    linear_labels = GraphSpec((NodeSpec(),) * 3, ("linear", "through", "through"), dml(3).edges)
    with pytest.raises(KTGError, match="'label→0 gate' = 'linear' is outside the search space; allowed: through"):
        SearchSpace(num_nodes=3, name="labels-on").to_params(linear_labels)
    shared = SearchSpace(num_nodes=3, name="shared")
    two_designs = GraphSpec((NodeSpec(),) * 3, ("through",) * 3,
                            (EdgeSpec(1, 0, "prob_kl", "through"), EdgeSpec(0, 1, "att_mse", "through")))
    with pytest.raises(KTGError, match=r"more than one loss design \(prob_kl, att_mse\); the search space 'shared' "
                                       r"shares one"):
        shared.to_params(two_designs)
    two_gates = GraphSpec((NodeSpec(),) * 3, ("through",) * 3,
                          (EdgeSpec(1, 0, "prob_kl", "through"), EdgeSpec(0, 1, "prob_kl", "linear")))
    with pytest.raises(KTGError, match=r"more than one gate \(through, linear\)"):
        shared.to_params(two_gates)
    # an edge that is off shares nothing: its design is not the shared one
    one_on = GraphSpec((NodeSpec(),) * 3, ("through",) * 3,
                       (EdgeSpec(1, 0, "prob_kl", "linear"), EdgeSpec(0, 1, "att_mse", "cutoff")))
    params = shared.to_params(one_on)
    assert (params["shared loss"], params["shared gate"], params["1→0 edge"], params["0→1 edge"]) == (
        "prob_kl", "linear", "on", "off")


def test_joining_a_study_with_another_space_is_refused_and_older_studies_searched_the_papers(tmp_path):
    connect(settings(tmp_path), heartbeats=False)
    labels_on = SearchSpace(num_nodes=2, name="labels-on", crop_sizes=SPACE.crop_sizes)
    with pytest.raises(KTGError, match=r"^study 'test' searches with other settings \(space.label_gates: study has "
                                       r"\['through', 'cutoff', 'linear', 'correct'\], you gave \['through'\]; "
                                       r"space.name: study has 'paper', you gave 'labels-on'\); use the same"):
        connect(settings(tmp_path, space=labels_on), heartbeats=False)
    study, _, _ = connect(settings(tmp_path), heartbeats=False)
    stored = study.user_attrs[SETTINGS_ATTR]
    study.set_user_attr(SETTINGS_ATTR, {**stored, "space": {k: v for k, v in stored["space"].items() if k != "name"}})
    connect(settings(tmp_path), heartbeats=False)  # a study stored before spaces had names searched the papers'
