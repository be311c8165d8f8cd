"""Chains of graphs: a run made of stages, where a finished stage's nodes teach the next stage as frozen nodes.

Teacher → assistant → student compression and distilling the ensemble of a finished graph into one student
(``docs/method.md#ensemble-node``) are both chains. A chain file is JSON::

    {"format": "ktg.chain", "version": 1,
     "train": {"epochs": 10, "batch_size": 64},              # defaults for every stage (TrainConfig fields)
     "stages": [
       {"name": "teacher", "graph": "dml", "nodes": 2, "model": "abn_resnet56"},
       {"name": "student", "train": {"epochs": 5},
        "graph": {... a graph, whose nodes may take {"weights": {"run": "@teacher", "node": 0}, "frozen": true} ...}}
     ]}

``"@teacher"`` is the folder of the stage called ``teacher`` inside the chain's output folder. A stage's
``graph`` is a named graph (with ``nodes`` and ``model``), a graph file path, or an inline graph. ``"recipe"`` in
``train`` (the chain's or a stage's, which wins) names a registered recipe and applies it as ``ktg train --recipe``
does (:meth:`ktg.config.TrainConfig.from_recipe`): every option the file or the command line gives overrides the
recipe's values, which override the dataset's suggestions, and the recipe's model options are given for every node
of the stage. Running a chain again skips finished stages and resumes an interrupted one.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ktg.config import TrainConfig
from ktg.data import DataSource
from ktg.errors import KTGError
from ktg.graph import GraphError, GraphSpec, resolve_graph
from ktg.io import read_json
from ktg.plan import TrainingPlan, plan_training
from ktg.registry import RECIPES
from ktg.run_folder import FinalMetrics, RunFolder

if TYPE_CHECKING:  # planning a chain needs no framework; training it does
    from ktg.data.images import Dataset
    from ktg.train import FinishCallback

FORMAT = "ktg.chain"
TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def load_chain(path: str | Path) -> dict[str, Any]:
    """Read and check a chain file; errors name the file and the field."""
    path = Path(path)
    chain = read_json(path, "chain file")
    if not isinstance(chain, dict) or chain.get("format") != FORMAT or chain.get("version") != 1:
        raise KTGError(f"chain file {path}: expected \"format\": \"{FORMAT}\" and \"version\": 1")
    stages = chain.get("stages")
    if not isinstance(stages, list) or not stages:
        raise KTGError(f"chain file {path}: stages: expected a non-empty list")
    names = [stage.get("name") if isinstance(stage, dict) else None for stage in stages]
    if any(not isinstance(name, str) or not name or "/" in name for name in names) or len(set(names)) != len(names):
        raise KTGError(f"chain file {path}: every stage needs a distinct \"name\" (a folder name), got {names}")
    for where, options in [("train", chain.get("train", {}))] + [
            (f"stages[{i}].train", stage.get("train", {})) for i, stage in enumerate(stages)]:
        unknown = sorted(set(options) - TRAIN_FIELDS)
        if unknown:
            raise KTGError(f"chain file {path}: {where}: unknown option(s) {', '.join(unknown)}; "
                           f"allowed: {', '.join(sorted(TRAIN_FIELDS))}")
        if options.get("recipe") is not None and options["recipe"] not in RECIPES:
            raise KTGError(f"chain file {path}: {where}: unknown recipe {options['recipe']!r}; choose one of: "
                           f"{', '.join(RECIPES)}")
    return chain


def stage_graph(stage: dict[str, Any], out: Path, earlier: list[str]) -> GraphSpec:
    """The stage's graph with ``@name`` run references replaced by the folders of the ``earlier`` stages."""
    graph = stage["graph"]
    if isinstance(graph, str):
        spec = resolve_graph(graph, stage.get("nodes"), stage.get("model"))
        data = spec.to_dict()
    elif isinstance(graph, dict):
        data = json.loads(json.dumps(graph))
    else:
        raise KTGError(f"stage {stage['name']!r}: graph: expected a name, a file or a graph object")
    for i, node in enumerate(data.get("nodes", [])):
        run = (node.get("weights") or {}).get("run")
        if isinstance(run, str) and run.startswith("@"):
            if run[1:] not in earlier:
                raise KTGError(f"stage {stage['name']!r}: nodes[{i}] takes weights from {run}, which is not an "
                               f"earlier stage ({', '.join(earlier) or 'none'})")
            node["weights"]["run"] = str(out / run[1:])
    return GraphSpec.from_dict(data, where=f"stage {stage['name']!r} graph")


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of a chain as it will train: its ``name``, its run folder ``path`` and its :class:`TrainingPlan`
    (graph, training config, data source)."""

    name: str
    path: Path
    plan: TrainingPlan


def plan_chain(
    chain: dict[str, Any],
    out_dir: str | Path,
    source: DataSource,
    *,
    overrides: dict[str, Any] | None = None,
    node_options: dict[str, Any] | None = None,
) -> list[Stage]:
    """Every stage of ``chain`` (see :func:`load_chain`) as it will train on ``source`` into
    ``out_dir/<stage name>``; KTGError or GraphError naming the stage for a mistake in any of them.

    A stage is planned as ``ktg train`` plans a run (:func:`ktg.plan.plan_training`, the one rule): the training
    options given (the chain's, over them the stage's, over them ``overrides`` such as the command line's device)
    over the values of the recipe they name, over the dataset's suggestions, over the defaults; ``node_options``
    (and the recipe's model options, which they override) are given for every node of every stage.
    """
    out = Path(out_dir)
    names = [stage["name"] for stage in chain["stages"]]
    stages = []
    for i, stage in enumerate(chain["stages"]):
        given = {**chain.get("train", {}), **stage.get("train", {}), **(overrides or {})}
        recipe = given.pop("recipe", None)
        graph = stage_graph(stage, out, names[:i])  # its errors name the stage
        try:
            plan = plan_training(source, graph, recipe=recipe, given=given, node_options=node_options)
        except GraphError as error:
            raise GraphError(f"stage {names[i]!r} graph: {error}") from None
        except KTGError as error:
            raise KTGError(f"stage {names[i]!r}: {error}") from None
        stages.append(Stage(names[i], out / names[i], plan))
    return stages


def run_chain(
    stages: list[Stage],
    dataset: Dataset,
    *,
    on_finish: FinishCallback | None = None,
    progress: bool = True,
    report: Callable[[str], None] = print,
) -> list[FinalMetrics]:
    """Train the planned ``stages`` (:func:`plan_chain`, which checks every stage before the first trains: a mistake
    in the last must not surface only after the others have trained) in order on ``dataset``; returns each
    stage's final metrics. ``on_finish`` is called as each stage finishes (see :data:`ktg.train.FinishCallback`).
    """
    from ktg.train import train

    results = []
    for stage in stages:
        stage_run = RunFolder(stage.path)
        if stage_run.is_finished():
            report(f"stage {stage.name}: finished earlier, kept ({stage_run.path})")
            results.append(stage_run.read_metrics())
        else:
            report(f"stage {stage.name}: training {stage.plan.graph.num_nodes} node(s) into {stage_run.path}")
            results.append(train(stage.plan.graph_at(dataset.image_size), dataset, stage.plan.config, stage_run.path,
                                 resume=stage_run.holds_run(), on_finish=on_finish, progress=progress))
    return results
