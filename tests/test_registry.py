"""The records of ktg.registry: consistent among themselves, torch-free, and the one place a design, gate or pruner
is defined — a test-only design, gate and pruner registered here reach the engine, ``ktg graph show``, the search
space and the CLI's choices with no other edit."""

import subprocess
import sys

import optuna
import pytest
import torch

from ktg.cli import build_parser, main
from ktg.cli.search import search_settings_from_args
from ktg.engine import build_graph
from ktg.errors import KTGError
from ktg.graph import EdgeSpec, GraphSpec, NodeSpec
from ktg.registry import (
    GATES,
    LOSS_DESIGNS,
    PRUNERS,
    DesignRecord,
    GateRecord,
    PrunerRecord,
    composite,
    design_names,
    gate_names,
    register_design,
    register_gate,
    register_pruner,
)
from ktg.search.space import SearchSpace
from ktg.search.worker import make_pruner


def test_each_pruner_declares_the_epochs_it_reads():
    assert PRUNERS["successive-halving"].epochs_read(300, first_rung=1) == {1, 2, 4, 8, 16, 32, 64, 128, 256}
    assert PRUNERS["hyperband"].epochs_read(30, first_rung=1) == {1, 3, 9, 27}
    assert PRUNERS["median"].epochs_read(5, first_rung=1) == {1, 2, 3, 4, 5}
    assert PRUNERS["none"].epochs_read(30, first_rung=1) is None  # every epoch: the fidelity measurement


@pytest.mark.parametrize("first_rung, epochs, halving, hyperband, median", [
    (1, 12, {1, 2, 4, 8}, {1, 3, 9}, set(range(1, 13))),
    (2, 12, {2, 4, 8}, {2, 6}, set(range(2, 13))),
    (3, 10, {3, 6}, {3, 9}, set(range(3, 11))),
    (4, 16, {4, 8, 16}, {4, 12}, set(range(4, 17))),
    (5, 5, {5}, {5}, {5}),
])
def test_the_first_rung_sets_every_epoch_a_pruner_reads(first_rung, epochs, halving, hyperband, median):
    read = {name: PRUNERS[name].epochs_read(epochs, first_rung=first_rung) for name in PRUNERS}
    assert (read["successive-halving"], read["hyperband"], read["median"]) == (halving, hyperband, median)
    assert read["none"] is None


@pytest.mark.parametrize("name", ["successive-halving", "hyperband", "median"])
@pytest.mark.parametrize("first_rung", [1, 3])
def test_no_pruner_stops_a_trial_before_its_first_rung(name, first_rung):
    """Each trial worse than the one before, asked at every epoch: the pruner stops trials at the first rung, never
    before, and only at epochs it declares it reads (Optuna's own rungs agree with the epochs declared)."""
    epochs = 9
    study = optuna.create_study(study_name="rungs", direction="maximize",  # hyperband's brackets hash the name
                                pruner=make_pruner(name, epochs, first_rung=first_rung))
    read = PRUNERS[name].epochs_read(epochs, first_rung=first_rung)
    stopped_at = []
    for number in range(8):  # the median pruner compares from its sixth trial on (n_startup_trials=5)
        trial = study.ask()
        score = 1.0 - 0.1 * number
        for epoch in range(1, epochs + 1):
            trial.report(score, epoch)
            if epoch < epochs and trial.should_prune():
                stopped_at.append(epoch)
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            study.tell(trial, score)
    assert stopped_at and min(stopped_at) == first_rung and set(stopped_at) <= read


def test_every_record_resolves_and_figures_can_tell_them_apart():
    for table in (LOSS_DESIGNS, GATES):
        assert all(callable(record.load()) for record in table.values())
    assert all(isinstance(make_pruner(name, 4, first_rung=2), optuna.pruners.BasePruner) for name in PRUNERS)
    labels = [record.label for record in LOSS_DESIGNS.values()]
    colors = [record.color for record in GATES.values()]
    assert len(set(labels)) == len(labels) and len(set(colors)) == len(colors)
    assert LOSS_DESIGNS["prob_cos+att_cos"].reads == {"logits", "attention"} and LOSS_DESIGNS["att_cos"].pushes
    # The papers' space: six designs, four gates on either kind of edge.
    assert len(design_names(paper_only=True)) == 6
    assert gate_names(paper_only=True, on="network") == gate_names(paper_only=True, on="label") == (
        "through", "cutoff", "linear", "correct")


def test_contradictory_records_are_refused():
    with pytest.raises(ValueError, match="registered twice"):
        register_design(LOSS_DESIGNS["prob_kl"])
    with pytest.raises(ValueError, match="pull and push at once"):
        composite("prob_kl+att_cos", ("prob_kl", "att_cos"), "KL pull, cos push")
    with pytest.raises(ValueError, match="must read some of"):
        register_design(DesignRecord("odd", lambda *args: None, frozenset({"pixels"}), "pull", "odd"))
    for teacher_gate, on_network_edges in (("merit", True), ("merit_label", False)):
        with pytest.raises(ValueError, match="teacher gate"):
            register_gate(GateRecord("odd", lambda *args: None, "#000000", on_network_edges=on_network_edges,
                                     teacher_gate=teacher_gate))
    assert "odd" not in LOSS_DESIGNS and "odd" not in GATES


def test_the_registry_imports_no_framework():
    code = "import sys, ktg.registry; print(sorted({'torch', 'optuna', 'matplotlib'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# -- a design, a gate and a pruner that exist only in this test ------------------------------------------------


def l1_of_probabilities(source, target, temperature, crop_sizes):
    """L1 distance of the two probability vectors per sample."""
    return (source.logits.softmax(dim=1) - target.logits.softmax(dim=1)).abs().sum(dim=1)


def half(loss, source_logits, labels, iteration, total_iterations):
    """Every sample counts half."""
    return torch.full_like(loss, 0.5)


PATIENT_CALLS: list[int] = []


def patient(epochs, *, first_rung):
    """Prune only after half of the epochs, or from the first rung if later (and note the epochs it was made for)."""
    PATIENT_CALLS.append(epochs)
    return optuna.pruners.MedianPruner(n_warmup_steps=max(epochs // 2, first_rung))


@pytest.fixture
def test_records():
    """Register the test-only design ``l1_prob``, gate ``half`` and pruner ``patient``; the registry is restored
    afterwards."""
    saved = [(table, dict(table)) for table in (LOSS_DESIGNS, GATES, PRUNERS)]
    register_design(DesignRecord("l1_prob", l1_of_probabilities, frozenset({"logits"}), "pull", "L1 pull p"))
    register_gate(GateRecord("half", half, "#123456"))
    register_pruner(PrunerRecord("patient", patient))
    yield
    for table, content in saved:
        table.clear()
        table.update(content)


def two_nodes_with_test_records() -> GraphSpec:
    return GraphSpec((NodeSpec("abn_resnet20", {"base_width": 4}),) * 2, ("half", "through"),
                     (EdgeSpec(1, 0, "l1_prob", "half"), EdgeSpec(0, 1, "prob_kl", "through")), crop_sizes=(3,))


def test_a_registered_design_and_gate_are_trained_by_the_engine(test_records):
    torch.manual_seed(0)
    graph = build_graph(two_nodes_with_test_records(), num_classes=5)
    images, labels = torch.rand(4, 3, 16, 16), torch.randint(0, 5, (4,))
    outputs = graph(images)
    losses = graph.losses(outputs, labels, 1, 1)
    expected = 0.5 * l1_of_probabilities(outputs[1], outputs[0], 1.0, (3,)).mean()
    assert torch.allclose(losses.terms["edge 1→0 l1_prob/half"], expected)
    assert losses.gate_weights["label→0 abn_ce/half"].item() == 0.5


def test_a_registered_design_and_gate_appear_in_graph_show(test_records, tmp_path, capsys):
    graph_file = tmp_path / "graph.json"
    two_nodes_with_test_records().save(graph_file)
    assert main(["graph", "show", str(graph_file)]) == 0
    text = capsys.readouterr().out
    assert "1 → 0      l1_prob  L1 pull p  half" in text and "label → 0  CE       CE         half" in text
    assert main(["graph", "show", str(graph_file), "--format", "dot"]) == 0
    assert 'n1 -> n0 [label="L1 pull p (half)", color="#123456"' in capsys.readouterr().out


def test_a_registered_design_and_gate_appear_in_the_search_space_when_asked_for(test_records):
    assert "l1_prob" not in SearchSpace(num_nodes=2).designs and "half" not in SearchSpace(num_nodes=2).gates
    space = SearchSpace(num_nodes=2, designs=("prob_kl", "l1_prob"), gates=("through", "half"),
                        label_gates=("through", "half"))
    assert space.size == 2**2 * (2 * 2) ** 2
    assert space.distributions()["1→0 loss"].choices == ("prob_kl", "l1_prob")
    params = space.to_params(two_nodes_with_test_records())
    assert params["1→0 loss"] == "l1_prob" and space.to_params(space.from_params(params)) == params


def test_a_registered_design_gate_and_pruner_appear_in_the_cli_choices(test_records, capsys):
    args = build_parser().parse_args(["search", "--dataset", "digits", "--nodes", "2", "--designs", "l1_prob",
                                      "prob_kl", "--gates", "half", "--label-gates", "half", "through", "--pruner",
                                      "patient", "--epochs", "6", "--baseline", "none"])
    settings = search_settings_from_args(args)
    space = settings.space
    assert (space.designs, space.gates, space.label_gates) == (("l1_prob", "prob_kl"), ("half",), ("half", "through"))
    assert isinstance(make_pruner(settings.pruner, settings.config.epochs, first_rung=settings.rung),
                      optuna.pruners.MedianPruner)
    assert PATIENT_CALLS[-1] == 12  # a trial's epochs: as many steps on half the images as 6 on all
    with pytest.raises(SystemExit):
        main(["search", "--designs", "no_such_design"])
    error = capsys.readouterr().err
    assert "invalid choice: 'no_such_design'" in error and "'l1_prob'" in error


def test_a_default_baseline_outside_a_narrowed_space_is_refused_naming_the_way_out(test_records):
    """--gates without cutoff leaves independent outside the space: the search says so instead of dropping it."""
    args = build_parser().parse_args(["search", "--dataset", "digits", "--nodes", "2", "--gates", "half"])
    with pytest.raises(KTGError, match="--baseline independent: a baseline must be a graph the search could draw.*"
                       r"\(--baseline none\)"):
        search_settings_from_args(args)
