"""Graph files: round trips, named graphs, and clear messages for malformed input."""

import json

import pytest

from ktg.cli import main
from ktg.graph import EdgeSpec, GraphError, GraphSpec, NodeSpec, dml, independent, resolve_graph


def mixed_graph():
    return GraphSpec(
        nodes=(NodeSpec("abn_resnet20"), NodeSpec("abn_resnet32", {"attention_residual": False})),
        label_gates=("through", "linear"),
        edges=(EdgeSpec(0, 1, "prob_kl+att_mse", "correct"), EdgeSpec(1, 0, "att_cos", "cutoff"),
               EdgeSpec("ensemble", 0, "prob_kl", "through")),
        temperature=2.0, crop_sizes=(3, 5), ensemble_as_source=True, name="mixed",
    )


def test_json_round_trip(tmp_path):
    spec = mixed_graph()
    spec.save(tmp_path / "g.json")
    data = json.loads((tmp_path / "g.json").read_text())
    assert data["format"] == "ktg.graph" and data["version"] == 1
    assert GraphSpec.load(tmp_path / "g.json") == spec


def test_a_graph_trains_as_another_whatever_its_label_but_not_with_another_edge():
    from dataclasses import replace

    spec = mixed_graph()
    assert spec.trains_as(replace(spec, name="trial 94, chosen by the best mean"))
    assert not spec.trains_as(replace(spec, temperature=4.0))
    assert not spec.trains_as(replace(spec, edges=spec.edges[:2]))


def test_active_edges_skip_cutoff():
    assert [(e.source, e.target) for e in mixed_graph().active_edges] == [(0, 1), ("ensemble", 0)]


@pytest.mark.parametrize("n", [2, 3, 5])
def test_named_graphs(n):
    assert independent(n).edges == () and independent(n).label_gates == ("through",) * n
    edges = dml(n).edges
    assert len(edges) == n * (n - 1)
    assert {(e.source, e.target) for e in edges} == {(s, t) for s in range(n) for t in range(n) if s != t}
    assert all(e.loss == "prob_kl" and e.gate == "through" for e in edges)


def test_resolve_graph_from_name_and_file(tmp_path):
    assert resolve_graph("dml", 4, "abn_resnet20").nodes == (NodeSpec("abn_resnet20"),) * 4
    assert resolve_graph("dml", 2, None, {"base_width": 4}).nodes == (NodeSpec(None, {"base_width": 4}),) * 2
    mixed_graph().save(tmp_path / "g.json")
    spec = resolve_graph(str(tmp_path / "g.json"), options={"base_width": 4, "attention_residual": False})
    assert [node.model for node in spec.nodes] == ["abn_resnet20", "abn_resnet32"]
    assert spec.nodes[0].options == spec.nodes[1].options == {"base_width": 4, "attention_residual": False}
    with pytest.raises(GraphError, match="has 2 nodes but --nodes 3"):
        resolve_graph(str(tmp_path / "g.json"), 3)
    with pytest.raises(GraphError, match="neither a named graph"):
        resolve_graph(str(tmp_path / "missing.json"))


def edit(change):
    data = mixed_graph().to_dict()
    change(data)
    return data


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.update(format="other"), "format: expected 'ktg.graph'"),
        (lambda d: d.update(version=99), "version: this ktg reads version 1, got 99"),
        (lambda d: d.pop("nodes"), "nodes: missing"),
        (lambda d: d.update(colour="red"), "unknown field"),
        (lambda d: d["edges"][0].update(gate="thru"),
         r"edges\[0\].gate: 'thru' is not allowed; allowed: through, cutoff, linear, correct"),
        (lambda d: d["edges"][0].update(loss="l2"), r"edges\[0\].loss: 'l2' is not allowed; allowed: prob_kl"),
        (lambda d: d["edges"][0].update(target=0), r"edges\[0\]: node 0 cannot teach itself"),
        (lambda d: d["edges"][0].update(target=7), r"edges\[0\].target: 7 is not a network node; allowed: 0..1"),
        (lambda d: d["edges"][0].update(source="1"), r"edges\[0\].source: '1' is not a source node"),
        (lambda d: d["edges"].append(dict(d["edges"][0])), "a second edge 0→1"),
        (lambda d: d["ensemble"].update(as_source=False), 'set "ensemble": {"as_source": true}'),
        (lambda d: d.update(label_gates=["through"]), "label_gates: expected one gate per node"),
        (lambda d: d.update(label_gates=["through", "often"]), r"label_gates\[1\]: 'often' is not allowed"),
        (lambda d: d.update(temperature=0), "temperature: must be a positive number"),
        (lambda d: d.update(crop_sizes=[3, 0]), "crop_sizes: must be a non-empty list of positive integers"),
        (lambda d: d["edges"][0].pop("gate"), r"edges\[0\].gate: missing"),
        (lambda d: d["nodes"][0].update(model=3), r"nodes\[0\].model: expected a model name"),
        (lambda d: d["edges"][0].update(target=True), r"edges\[0\].target: expected int"),
    ],
)
def test_malformed_graphs_name_the_field_and_the_allowed_values(tmp_path, change, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(edit(change)))
    with pytest.raises(GraphError, match=message) as info:
        GraphSpec.load(path)
    assert str(info.value).startswith(f"graph file {path}: ")


def test_invalid_json_names_the_position(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"format": "ktg.graph",\n  "version": 1,,}')
    with pytest.raises(GraphError, match="not valid JSON: .* line 2"):
        GraphSpec.load(path)


def test_graphs_built_in_code_are_validated_too():
    with pytest.raises(GraphError, match="cannot teach itself"):
        GraphSpec((NodeSpec(), NodeSpec()), ("through", "through"), (EdgeSpec(1, 1, "prob_kl", "through"),))


def test_an_option_given_for_every_node_fills_open_choices_and_may_not_contradict_a_node():
    spec = GraphSpec((NodeSpec(None), NodeSpec("abn_resnet32", {"base_width": 8})), ("through", "through"))
    given = spec.with_given("abn_resnet32", {"base_width": 8, "pretrained": "w.pt"})
    assert given.nodes == (NodeSpec("abn_resnet32", {"base_width": 8, "pretrained": "w.pt"}),) * 2
    with pytest.raises(GraphError, match=r"nodes\[1\] sets model \"abn_resnet32\" but --model gives "
                                         r"\"abn_resnet20\": .*drop --model or change the node"):
        spec.with_given("abn_resnet20")
    with pytest.raises(GraphError, match=r"nodes\[1\] sets base_width 8 but --width gives 4"):
        spec.with_given(options={"base_width": 4})
    # A dataset's suggestion is weaker than both: it fills only what neither the node nor the user sets.
    resolved = spec.with_given(options={"pretrained": "w.pt"}).resolved(32, {"base_width": 4})
    assert [node.options for node in resolved.nodes] == [{"base_width": 4, "pretrained": "w.pt"},
                                                        {"base_width": 8, "pretrained": "w.pt"}]
    assert resolved.nodes[0].model == "abn_resnet20"


def test_a_graph_file_that_contradicts_an_option_is_one_error_naming_file_node_and_option(tmp_path, capsys):
    mixed_graph().save(tmp_path / "g.json")
    assert main(["train", "--graph", str(tmp_path / "g.json"), "--dataset", "digits", "--model", "abn_resnet20",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err == (f"ktg: error: graph file {tmp_path / 'g.json'}: nodes[1] sets model \"abn_resnet32\" but --model "
                   "gives \"abn_resnet20\": an option given for every node may not contradict a node; drop --model or "
                   "change the node\n")
    assert not (tmp_path / "run").exists()
