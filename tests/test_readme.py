"""The README's Python code runs as it is written: every ```python block of README.md, in a fresh folder, with
only its training shortened (one epoch of narrower nodes on smaller images instead of six)."""

import ast
import re
import shutil
from pathlib import Path

from ktg.run_folder import RunFolder

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```$", README.read_text(encoding="utf-8"), flags=re.M | re.S)
USING, API, ENGINE, PLAN = BLOCKS if len(BLOCKS) == 4 else ("", "", "", "")
#: What the test changes in the Python API example, and only there: it trains.
SHORTER = {'load_dataset("digits")': 'load_dataset("digits", image_size=16)', "epochs=6": "epochs=1",
           '{"base_width": 8}': '{"base_width": 4}'}


def test_this_file_runs_every_python_block_of_the_readme():
    assert len(BLOCKS) == 4
    assert "ktg.load_run" in USING and "train(" in API and "graph.losses(" in ENGINE and "plan(" in PLAN


def run_block(code: str, namespace: dict) -> None:
    exec(compile(code, str(README), "exec"), namespace)


def test_using_a_trained_graph_runs_as_written(digits_run, tmp_path, monkeypatch, capsys):
    run, images = digits_run  # a tiny run on the digits, as the tour trains one
    monkeypatch.chdir(tmp_path)
    shutil.copytree(run, "runs/tour")
    shutil.copy(sorted(images.glob("*.png"))[0], "digit.png")
    run_block(USING, {})
    predicted = ast.literal_eval(capsys.readouterr().out)
    assert len(predicted) == 3 and set(predicted) <= {str(digit) for digit in range(10)}
    assert predicted[0] == predicted[1]  # the same picture, as a file and as a PIL image


def test_the_python_api_example_prints_two_accuracies_and_the_engine_example_names_every_loss(
        tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = API
    for old, new in SHORTER.items():
        assert code.count(old) == 1, old
        code = code.replace(old, new)
    namespace: dict = {}
    run_block(code, namespace)
    ensemble, mean_node = (float(word) for word in capsys.readouterr().out.split())
    final = RunFolder("runs/api").read_metrics()
    assert final.epochs == 1 and (ensemble, mean_node) == (final.ensemble_accuracy, final.mean_node_accuracy)

    run_block(ENGINE, namespace)
    names = ast.literal_eval(capsys.readouterr().out)
    assert names == [f"label→{node} abn_ce/through" for node in range(3)] + [
        f"edge {source}→{target} prob_kl/through" for target in range(3) for source in range(3) if source != target]
    graph = namespace["graph"]
    assert all(p.grad is not None for p in graph.parameters() if p.requires_grad), "the backward trains every node"


def test_the_planning_example_prints_the_recipes_values_as_its_comment_says(capsys):
    run_block(PLAN, {})
    printed = capsys.readouterr().out.split()
    assert printed == PLAN.split("# ")[-1].split(":")[0].split()  # the comment states what it prints
