"""What a run will train, resolved from what was given, without a framework: the one planning path.

``ktg train``, every stage of a chain (:mod:`ktg.chain`), ``ktg search`` (its training config, and the node
options of its trials and baselines) and every script that asks what a command would train (``ktg.cli.plan``)
go through :func:`plan_training` or its two parts, :func:`training_config` and :func:`given_node_options`, so one
rule decides which value wins everywhere:

- training options (:class:`~ktg.config.TrainConfig` fields): given > the recipe's > the dataset's suggestion >
  the default (:meth:`~ktg.config.TrainConfig.from_recipe`);
- model options of every node: given > the recipe's, and a node of a graph file that sets another value is an
  error (:meth:`~ktg.graph.GraphSpec.with_given`); the dataset's suggestions fill only what neither sets, once
  the image size is known (:meth:`TrainingPlan.graph_at`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping

from ktg.config import TrainConfig, recipe_node_options
from ktg.data import DataSource
from ktg.errors import KTGError
from ktg.graph import GraphSpec, resolve_graph
from ktg.run_folder import RunFolder


@dataclass(frozen=True)
class TrainingPlan:
    """One run as it will train.

    Attributes:
        graph: the graph with the models and model options given for every node, before the image size is known
            (:meth:`graph_at` is the graph the trainer trains).
        config: the training config, every option resolved (``device`` as given: ``auto`` stays ``auto``).
        source: where the images come from.
    """

    graph: GraphSpec
    config: TrainConfig
    source: DataSource

    def graph_at(self, image_size: int) -> GraphSpec:
        """The graph as trained on images of ``image_size``: default models filled in, and the dataset's
        suggested node options where neither the graph nor the options given set them."""
        return self.graph.resolved(image_size, self.source.defaults.node_options)

    def trained_in(self, run: RunFolder, device_type: str) -> bool:
        """Whether ``run`` holds a run trained as planned on a device of ``device_type`` (``cpu``, ``cuda``): the
        same training config as the trainer saves it, the same data source, and a graph that trains the same,
        whatever its label. A run whose files cannot be read is not."""
        try:
            saved = run.read_config()
            graph = run.read_graph()
        except KTGError:
            return False
        train = saved.train
        if saved.provenance is not None and saved.provenance.device_type == device_type:
            # the device a run was asked for (auto, cpu, cuda:1) changes nothing it trains on a device of that type
            train = replace(train, device=self.config.device)
        return (train == self.config.resolved(device_type) and saved.data == self.source
                and graph.trains_as(self.graph_at(saved.image_size)))


def plan_training(
    source: DataSource,
    graph: str | GraphSpec = "dml",
    *,
    nodes: int | None = None,
    model: str | None = None,
    recipe: str | None = None,
    given: Mapping[str, Any] | None = None,
    node_options: Mapping[str, Any] | None = None,
    suggested: Mapping[str, Any] | None = None,
) -> TrainingPlan:
    """The run that trains ``graph`` (a named graph of ``nodes`` nodes, a graph file, or a graph) on ``source``.

    ``given``: the training options given (TrainConfig fields; ``recipe`` is not one of them); ``model`` and
    ``node_options``: what is given for every node; ``recipe``: a registered recipe's name, whose values and node
    options count for less than those given. ``suggested``: the training values to use where neither gives one
    (default: the dataset's, ``source.defaults.train``; a search adds its held-out fraction).
    """
    config = training_config(source, recipe, given, suggested)
    options = given_node_options(recipe, node_options)
    if isinstance(graph, str):
        spec = resolve_graph(graph, nodes, model, options)
    else:
        spec = graph.with_given(model, options)
    return TrainingPlan(spec, config, source)


def training_config(source: DataSource, recipe: str | None = None, given: Mapping[str, Any] | None = None,
                    suggested: Mapping[str, Any] | None = None) -> TrainConfig:
    """The training config: the options ``given`` over the ``recipe``'s values over ``suggested`` (default: the
    dataset's suggestions) over TrainConfig's defaults."""
    return TrainConfig.from_recipe(recipe, dict(given or {}),
                                   dict(source.defaults.train if suggested is None else suggested))


def given_node_options(recipe: str | None = None, node_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The model options given for every node: ``node_options`` over the ``recipe``'s."""
    return {**recipe_node_options(recipe), **(node_options or {})}
