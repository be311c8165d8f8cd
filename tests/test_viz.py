"""Graph figures, text exports and attention grids: files written, images of the expected size, bad input."""

import logging
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch
from matplotlib.transforms import Bbox
from tiny_runs import narrow

import ktg
from ktg.cli import main
from ktg.config import TrainConfig
from ktg.data import load_dataset
from ktg.graph import EdgeSpec, GraphSpec, NodeSpec, dml
from ktg.train import train
from ktg.viz.attention import CELL_SIZE, log_attention_grid
from ktg.viz.graph_figure import graph_figure, summary, to_dot, to_mermaid


def mixed_graph() -> GraphSpec:
    """Every design and gate, with a cut-off label edge and a cut-off network edge."""
    edges = (EdgeSpec(1, 0, "prob_kl", "through"), EdgeSpec(0, 1, "att_cos", "linear"),
             EdgeSpec(2, 0, "prob_kl+att_mse", "correct"), EdgeSpec(0, 2, "prob_cos", "cutoff"),
             EdgeSpec(2, 1, "prob_cos+att_cos", "through"), EdgeSpec(1, 2, "att_mse", "linear"))
    return GraphSpec((NodeSpec("abn_resnet18"),) * 3, ("through", "linear", "cutoff"), edges, name="mixed")


def read_png(path):
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    return image


def assert_not_blank(image):
    rgb = image[..., :3]
    assert rgb.std() > 0.02, "the image is one flat colour"
    assert (rgb.min(axis=2) < 0.3).mean() > 0.001, "nothing dark was drawn"


def test_graph_show_writes_a_png_of_the_asked_size_and_an_svg(tmp_path, capsys):
    graph_file = tmp_path / "mixed.json"
    mixed_graph().save(graph_file)
    png = tmp_path / "figures" / "mixed.png"
    assert main(["graph", "show", str(graph_file), "--out", str(png), "--size", "5", "4", "--dpi", "60"]) == 0
    image = read_png(png)
    assert image.shape[:2] == (240, 300)
    assert_not_blank(image)
    assert "cut off: label → 2, 0 → 2" in capsys.readouterr().out

    svg = tmp_path / "dml.svg"
    assert main(["graph", "show", "dml", "--nodes", "4", "--out", str(svg)]) == 0
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text and text.rstrip().endswith("</svg>")
    assert not list(tmp_path.glob("**/.*.tmp"))


def test_dot_and_mermaid_have_one_line_per_active_edge_and_none_for_cut_off_edges():
    spec = mixed_graph()
    dot, mermaid = to_dot(spec), to_mermaid(spec)
    active = [(f"n{e.source}", f"n{e.target}") for e in spec.active_edges] + [("label", "n0"), ("label", "n1")]
    cut = [("n0", "n2"), ("label", "n2")]
    for source, target in active:
        assert sum(line.strip().startswith(f"{source} -> {target} ") for line in dot.splitlines()) == 1
        assert sum(line.strip().startswith(f"{source} -->|") and line.endswith(f"| {target}")
                   for line in mermaid.splitlines()) == 1
    for source, target in cut:
        assert f"{source} -> {target} " not in dot and not any(
            line.strip().startswith(f"{source} -->") and line.endswith(f"| {target}") for line in mermaid.splitlines())
    assert dot.count(" -> n") == len(active) and mermaid.count(" -->|") == len(active)
    assert '"cos push A (linear)"' in dot and '"KL+MSE pull p+A · correct"' in mermaid
    assert mermaid.count("linkStyle") == len(active)


def test_frozen_teachers_hints_and_ensemble_members_are_shown():
    spec = GraphSpec((NodeSpec("abn_resnet20", weights={"file": "teacher.pt"}, frozen=True), NodeSpec("abn_resnet20"),
                      NodeSpec("abn_resnet20")), ("cutoff", "merit_label", "through"),
                     (EdgeSpec(0, 1, "prob_kl", "merit", temperature=4.0),
                      EdgeSpec(0, 2, "hint_mse", "through", stage="layer2")), ensemble_members=(1, 2))
    dot, text = to_dot(spec), summary(spec)
    assert "n0 -> ensemble" not in dot and "n1 -> ensemble" in dot and "frozen" in dot
    assert '"KL pull p T=4 (merit)"' in dot and '"MSE pull h@layer2 (through)"' in dot
    assert "the ensemble node averages nodes 1, 2" in text and "node 0: abn_resnet20 (frozen)" in text


def test_summary_names_every_edge_and_the_cut_off_ones():
    text = summary(dml(2))
    assert "1 → 0      prob_kl  KL pull p  through" in text and "cut off: none" in text


def test_graph_show_prints_text_formats_and_writes_them_atomically(tmp_path, capsys):
    assert main(["graph", "show", "dml", "--nodes", "2", "--format", "dot"]) == 0
    assert capsys.readouterr().out.startswith('digraph "dml" {')
    out = tmp_path / "g.mmd"
    assert main(["graph", "show", "independent", "--out", str(out)]) == 0
    assert out.read_text().startswith("flowchart TB") and " -->|" in out.read_text()


@pytest.mark.parametrize("argv, message", [
    (["graph", "show", "nosuch"], "neither a named graph"),
    (["graph", "show", "dml", "--format", "png"], "needs a file"),
    (["graph", "show", "dml", "--out", "x.gif"], "cannot tell the format"),
    (["attention", "--run", "no/such/run"], "does not exist"),
])
def test_bad_input_is_one_clear_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 2-node DML run of one epoch on synthetic 16-pixel images (a few seconds on a CPU)."""
    out = tmp_path_factory.mktemp("run")
    data = load_dataset("synthetic", image_size=16, train_size=32, test_size=16, num_classes=4)
    train(narrow(dml(2)), data, TrainConfig(epochs=1, batch_size=16, device="cpu"), out, progress=False,
          on_finish=log_attention_grid)
    return out


def test_attention_grid_has_one_row_per_image_and_one_column_per_node(tiny_run, tmp_path):
    out = tmp_path / "grid.png"
    assert main(["attention", "--run", str(tiny_run), "--n", "3", "--dpi", "40", "--out", str(out)]) == 0
    image = read_png(out)
    columns = 1 + 2 + 1  # input, two nodes, ensemble
    assert image.shape[:2] == (round(3 * CELL_SIZE[1] * 40), round(columns * CELL_SIZE[0] * 40))
    assert_not_blank(image)

    assert main(["attention", "--run", str(tiny_run), "--indices", "0", "5", "--no-ensemble", "--dpi", "40"]) == 0
    image = read_png(tiny_run / "attention_test.png")
    assert image.shape[:2] == (round(2 * CELL_SIZE[1] * 40), round(3 * CELL_SIZE[0] * 40))


def test_an_attention_figure_that_cannot_be_written_is_refused_before_the_run_is_loaded(tiny_run, tmp_path,
                                                                                       monkeypatch, capsys):
    def not_to_be_drawn(*args, **kwargs):
        raise AssertionError("the grid was drawn although its file cannot be written")

    monkeypatch.setattr("ktg.viz.attention.attention_grid_for_run", not_to_be_drawn)
    (tmp_path / "file").write_text("")
    assert main(["attention", "--run", str(tiny_run), "--out", str(tmp_path / "file" / "grid.png")]) == 2
    assert capsys.readouterr().err == (f"ktg: error: cannot write the figure --out {tmp_path / 'file'}: "
                                       f"{tmp_path / 'file'} is a file, not a folder\n")


def test_training_logs_the_attention_grid_to_tensorboard(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tiny_run / "tensorboard"))
    events.Reload()
    assert events.Tags()["images"] == ["attention"]
    image = events.Images("attention")[-1]
    assert image.step == 1
    assert (image.height, image.width) == (round(8 * CELL_SIZE[1] * 100), round(4 * CELL_SIZE[0] * 100))


def test_a_plotting_failure_at_the_end_of_training_is_only_a_warning(tiny_run, caplog):
    class BrokenWriter:
        def add_figure(self, *args, **kwargs):
            raise RuntimeError("disk full")

    graph = ktg.load_run(tiny_run).graph
    data = load_dataset("synthetic", image_size=16, train_size=32, test_size=16, num_classes=4)
    with caplog.at_level(logging.WARNING):
        log_attention_grid(BrokenWriter(), graph, data.test, data.eval_transform, step=1)
    assert "disk full" in caplog.text


def test_a_run_stopped_by_its_callback_logs_no_attention_grid(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = load_dataset("synthetic", image_size=16, train_size=32, test_size=16, num_classes=4)
    train(narrow(dml(2)), data, TrainConfig(epochs=2, batch_size=16, device="cpu"), tmp_path, progress=False,
          callback=lambda epoch, metrics: True, on_finish=log_attention_grid)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert events.Tags()["images"] == [] and events.Scalars("accuracy/ensemble")


def dense_graph(n: int = 4) -> GraphSpec:
    """Every ordered pair of n nodes joined, the designs and gates mixed, every label edge on."""
    designs = ["prob_kl", "prob_cos+att_cos", "att_mse", "prob_kl+att_mse", "att_cos", "prob_cos"]
    gates = ["through", "linear", "correct"]
    edges = tuple(EdgeSpec(s, t, designs[(s * n + t) % 6], gates[(s + t) % 3])
                  for t in range(n) for s in range(n) if s != t)
    return GraphSpec((NodeSpec("abn_resnet20"),) * n, tuple(gates[t % 3] for t in range(n)), edges, name="dense")


def covered_by_labels(figure) -> list[str]:
    """Every edge label whose box, as drawn (display coordinates), covers a node or an arrowhead."""
    FigureCanvasAgg(figure).draw()
    axes = figure.axes[0]
    labels = [text for text in axes.texts if text.get_bbox_patch() is not None]
    circles = [patch for patch in axes.patches if isinstance(patch, Circle)]
    boxes = [patch.get_window_extent() for patch in axes.patches if isinstance(patch, FancyBboxPatch)]
    polygons = [patch.get_transform().transform(polygon) for patch in axes.patches
                if isinstance(patch, FancyArrowPatch) for polygon in patch.get_path().to_polygons(closed_only=False)]
    heads = [polygon for polygon in polygons if len(polygon) > 3 and np.allclose(polygon[0], polygon[-1])]
    assert len(labels) >= 8 and len(heads) == len(labels) and len(boxes) == 2
    found = []
    for label in labels:
        box = label.get_bbox_patch().get_window_extent()
        for circle in circles:
            extent = circle.get_window_extent()
            centre, radius = np.array([extent.x0 + extent.x1, extent.y0 + extent.y1]) / 2, extent.width / 2
            if np.linalg.norm(centre - np.clip(centre, box.min, box.max)) < radius:
                found.append(f"{label.get_text()!r} covers a node")
        found += [f"{label.get_text()!r} covers a node box" for other in boxes if box.overlaps(other)]
        found += [f"{label.get_text()!r} covers an arrowhead" for head in heads
                  if box.overlaps(Bbox([head.min(axis=0), head.max(axis=0)]))]
    return found


@pytest.mark.parametrize("spec, size", [
    (GraphSpec.load(Path(__file__).parents[1] / "docs" / "example_graph.json").with_given("abn_resnet20"), (6.4, 6)),
    (dense_graph(), (7.0, 6.5)),
    (dense_graph(), (5.0, 4.0)),
], ids=["docs-example", "dense-4", "dense-4-small"])
def test_edge_labels_never_cover_a_node_or_an_arrowhead(spec, size):
    assert covered_by_labels(graph_figure(spec, size=size, dpi=100)) == []
