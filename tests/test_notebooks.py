"""The notebooks are committed without outputs and execute headless on tiny runs and a tiny search made here."""

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from ktg.cli import main
from ktg.graph import EdgeSpec, GraphSpec, NodeSpec

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
TINY = ["--dataset", "synthetic", "--image-size", "16", "--width", "4", "--batch-size", "16",
        "--dataset-option", "train_size=32", "--dataset-option", "test_size=16", "--dataset-option", "num_classes=4",
        "--device", "cpu", "--no-progress"]


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: clear the outputs"


def execute(name: str, cwd: Path) -> nbformat.NotebookNode:
    """Run a notebook in a fresh kernel of this interpreter ("python3" resolves to ipykernel's own spec, which
    starts sys.executable); a failing cell raises with its traceback."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return notebook


def images(notebook) -> int:
    return sum("image/png" in output.get("data", {}) for cell in notebook.cells for output in cell.get("outputs", []))


def test_attention_notebook_runs_on_two_tiny_runs(tmp_path, monkeypatch):
    pushing = GraphSpec((NodeSpec(),) * 2, ("through", "through"),
                        (EdgeSpec(1, 0, "prob_cos+att_cos", "through"), EdgeSpec(0, 1, "att_cos", "linear")),
                        crop_sizes=(3, 5), name="push")
    pushing.save(tmp_path / "push.json")
    assert main(["train", "--graph", str(tmp_path / "push.json"), "--out", str(tmp_path / "optimised"),
                 "--epochs", "1", *TINY]) == 0
    assert main(["train", "--graph", "independent", "--nodes", "2", "--out", str(tmp_path / "independent"),
                 "--epochs", "1", *TINY]) == 0
    monkeypatch.setenv("KTG_RUN_DIR", str(tmp_path / "optimised"))
    monkeypatch.setenv("KTG_BASELINE_RUN_DIR", str(tmp_path / "independent"))
    monkeypatch.setenv("KTG_N_IMAGES", "3")
    notebook = execute("attention_maps.ipynb", tmp_path)
    assert images(notebook) == 4  # the graph, two grids, the chosen images
    text = json.dumps(notebook)
    assert "mean similarity between different nodes" in text and "prob_cos+att_cos" in text


def test_search_notebook_runs_on_a_tiny_search(tmp_path, monkeypatch):
    search = tmp_path / "search"
    assert main(["search", "--nodes", "2", "--trials", "6", "--epochs", "2", "--crop-sizes", "3", "5",
                 "--out", str(search), *TINY]) == 0
    monkeypatch.setenv("KTG_SEARCH_DIR", str(search))
    monkeypatch.setenv("KTG_TOP", "3")
    notebook = execute("search_analysis.ipynb", tmp_path)
    assert images(notebook) >= 5  # accuracy over trials, pruned vs complete, shares, importances, best graphs
    assert "held-out split" in json.dumps(notebook)
