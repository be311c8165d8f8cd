"""What each loss design, gate, pruner, sampler, search space and training recipe *is*: one record each, from
which the rest of ktg is derived.

The loss checks, graph validation, the engine, the figures, the search spaces, the pruners, the samplers and the
CLI's choices all read these records, so adding a design or a gate is one pure function (in :mod:`ktg.losses` or
:mod:`ktg.gates`) plus one :func:`register_design` / :func:`register_gate` call here; a pruner or a sampler is
one factory plus one :func:`register_pruner` / :func:`register_sampler` call; a search space or a training
recipe is one :func:`register_space` / :func:`register_recipe` call. The method behind the records:
``docs/method.md#loss-designs``, ``docs/method.md#gates``, ``docs/method.md#search``,
``docs/method.md#search-spaces`` and ``docs/method.md#reference-protocol``.

This module imports nothing heavy (no torch, no optuna): a record names its function as ``"module:function"``,
imported on first use, so the command line can build its choices without loading a framework. A record may
also hold the callable itself (handy in tests).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar, Union

#: What an edge's design may read from its two nodes: perception logits, attention maps, a stage's features;
#: and the samples' labels, which say which of the classes is the true one.
KNOWLEDGE = ("logits", "attention", "features", "labels")
#: What a design does to the target relative to the source.
DIRECTIONS = ("pull", "push")
#: The gate of an edge that is not there: the engine never computes it (a graph file's name for it).
CUTOFF = "cutoff"
#: The pruner of the papers' search, and ``ktg search``'s default.
DEFAULT_PRUNER = "successive-halving"
#: ``ktg search``'s first rung (``--first-rung``: successive halving's minimum resource, the first epoch at which
#: any pruner may stop a trial) as a fraction of the run, rounded up. Measured with ``ktg study fidelity`` on
#: 10-epoch runs of the low-data MNIST folders (34 trials,
#: docs/results.md#rungs-how-early-does-a-short-runs-ranking-tell), the ranking of trials at epochs 1-4 hardly
#: predicted their final ranking (Spearman's rho 0.12-0.26, 0.38 at epoch 5); rho first reached 0.7 at 70 % of the
#: run. The papers' protocol, epoch 1, is the ``paper`` recipe's.
DEFAULT_FIRST_RUNG_FRACTION = 0.7
#: How long a search's trial trains (``--trial-length``). ``steps``: as many optimiser steps on its share of the
#: training split (``1 - holdout``) as ``--epochs`` epochs take on all of it, so ``--epochs / (1 - holdout)`` epochs;
#: ``epochs``: ``--epochs`` epochs on the share, as the papers' search did (the ``paper`` recipe's). Measured on the
#: low-data MNIST folder (docs/results.md#how-long-a-trial-trains), 10 epochs on half of 200 images left
#: ``independent``'s ensemble at 62-66 % on the held-out half where 10 epochs on all of them reach 85 % on the test
#: split: a race of such runs ranked graphs in a regime that the graph it picks never trains in.
TRIAL_LENGTHS = ("steps", "epochs")
DEFAULT_TRIAL_LENGTH = "steps"
#: The sampler of the papers' search, and ``ktg search``'s default.
DEFAULT_SAMPLER = "random"
#: ``ktg search``'s search space (``--space``): every label edge on. In the papers' space 87.5 % of the draws give
#: some node a ``cutoff`` or ``linear`` label edge, and such a node is often a passenger in the ensemble
#: (docs/results.md#spaces-what-crippled-label-edges-cost); the papers' space is the ``paper`` recipe's.
DEFAULT_SPACE = "labels-on"
#: The papers' temperature T of probability designs and k of the k×k attention crops: the defaults of every
#: graph, of the search space and of the command line (``docs/method.md#attention-crops``).
DEFAULT_TEMPERATURE = 1.0
DEFAULT_CROP_SIZES = (3, 7, 11)

FunctionRef = Union[str, Callable[..., Any]]
Record = TypeVar("Record")


@functools.lru_cache(maxsize=None)
def _import(reference: str) -> Callable[..., Any]:
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


def resolve(function: FunctionRef) -> Callable[..., Any]:
    """The callable a record names: ``"module:function"`` is imported (once), a callable is returned as it is."""
    return _import(function) if isinstance(function, str) else function


def add_record(table: dict[str, Record], record: Record, kind: str) -> Record:
    """Add ``record`` to ``table`` under its ``name``; ValueError if ``kind`` (e.g. "gate") of that name exists."""
    if record.name in table:
        raise ValueError(f"{kind} {record.name!r} is registered twice")
    table[record.name] = record
    return record


def lazy_attributes(module: str, sources: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module's ``__getattr__`` and ``__dir__`` offering each name of ``sources`` (name → the module that defines
    it), imported on first use: a light package can name classes whose modules load a framework."""

    def getattr_(name: str) -> Any:
        if name in sources:
            return getattr(importlib.import_module(sources[name]), name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    def dir_() -> list[str]:
        return sorted([*vars(sys.modules[module]), *sources])

    return getattr_, dir_


@dataclass(frozen=True)
class DesignRecord:
    """A loss design of network edges.

    Attributes:
        name: the name graph files and the CLI use (``"prob_kl"``).
        function: the per-sample loss ``(source, target, temperature, crop_sizes) -> Tensor[B]`` (see
            :mod:`ktg.losses`), as ``"module:function"`` or a callable; None for a composite design.
        reads: the knowledge it compares, a subset of :data:`KNOWLEDGE`.
        direction: ``"pull"`` (target towards source) or ``"push"`` (apart).
        label: the short text on its arrow in figures: measure, direction, knowledge (``"KL pull p"``).
        paper: one of the papers' designs, a default choice of the search space.
        parts: a composite design's parts; its loss is their sum (build it with :func:`composite`).
    """

    name: str
    function: FunctionRef | None
    reads: frozenset[str]
    direction: str
    label: str
    paper: bool = False
    parts: tuple[str, ...] = ()

    @property
    def pushes(self) -> bool:
        return self.direction == "push"

    @property
    def needs_attention(self) -> bool:
        return "attention" in self.reads

    @property
    def needs_features(self) -> bool:
        """Whether it compares a model stage's output (a hint): its edges name the stage and need a network
        source."""
        return "features" in self.reads

    @property
    def needs_labels(self) -> bool:
        """Whether it treats the true class apart from the others: the engine hands it the samples' labels."""
        return "labels" in self.reads

    def load(self) -> Callable[..., Any]:
        """The per-sample loss function; a composite's is the sum of its parts'."""
        if not self.parts:
            return resolve(self.function)
        functions = [LOSS_DESIGNS[part].load() for part in self.parts]

        def summed(source, target, temperature, crop_sizes):
            return sum(function(source, target, temperature, crop_sizes) for function in functions)

        return summed


@dataclass(frozen=True)
class GateRecord:
    """A gate: which share of an edge's per-sample loss reaches the total loss, and when.

    Attributes:
        name: the name graph files and the CLI use (``"through"``).
        function: the per-sample weights ``(loss, source_logits, labels, iteration, total_iterations) ->
            Tensor[B]`` (see :mod:`ktg.gates`), as ``"module:function"`` or a callable.
        color: its edges' colour in figures.
        paper: one of the papers' gates, a default choice of the search space.
        on_label_edges, on_network_edges: where a graph may use it.
        teacher_gate: for a label gate that weighs by a teacher's answers: the gate of the node's one network
            edge whose source is that teacher (``merit_label`` reads the source of the node's ``merit`` edge).
        computed: False for a gate whose edges are never computed (``cutoff``): figures leave them out.
    """

    name: str
    function: FunctionRef
    color: str
    paper: bool = False
    on_label_edges: bool = True
    on_network_edges: bool = True
    teacher_gate: str | None = None
    computed: bool = True

    def load(self) -> Callable[..., Any]:
        return resolve(self.function)


@dataclass(frozen=True)
class PrunerRecord:
    """A pruner of the search: ``factory(epochs, first_rung=E)`` returns an Optuna pruner whose resource is the
    epoch, which stops no trial before epoch E (``ktg search --first-rung``).

    Attributes:
        name: the name ``ktg search --pruner`` takes.
        factory: ``"module:function"`` or a callable taking the trials' epochs and, by keyword, the first rung.
        reads: ``"module:function"`` or a callable giving, for the same arguments, the set of epochs (from 1)
            whose scores the pruner reads; None: every epoch. The search evaluates a trial at those epochs and its
            last.
    """

    name: str
    factory: FunctionRef
    reads: FunctionRef | None = None

    def load(self) -> Callable[..., Any]:
        return resolve(self.factory)

    def epochs_read(self, epochs: int, *, first_rung: int) -> frozenset[int] | None:
        """The epochs whose scores the pruner reads in trials of ``epochs`` epochs with its first rung at epoch
        ``first_rung`` (None: every epoch)."""
        return None if self.reads is None else frozenset(resolve(self.reads)(epochs, first_rung=first_rung))


@dataclass(frozen=True)
class SamplerRecord:
    """A sampler of the search: ``factory(seed)`` returns an Optuna sampler that draws the graphs.

    Attributes:
        name: the name ``ktg search --sampler`` takes.
        factory: ``"module:function"`` or a callable taking the study's seed (``--search-seed``).
        description: one sentence for ``--help``: what it does and what its seed guarantees.
    """

    name: str
    factory: FunctionRef
    description: str

    def load(self) -> Callable[[int], Any]:
        return resolve(self.factory)


@dataclass(frozen=True)
class SpaceRecord:
    """A search space of ``ktg search --space`` (``docs/method.md#search-spaces``): the graphs it builds.

    Options given explicitly (``--designs``, ``--gates``, ``--label-gates``) replace its choices; a choice it
    leaves as None is the papers' (:class:`ktg.search.space.SearchSpace` applies that rule).

    Attributes:
        name: the name ``--space`` takes.
        description: one sentence for ``--help``: what it holds and why.
        designs, gates, label_gates: the loss designs and gates of network edges and the gates of label edges its
            graphs may use (None: the papers').
        shared: one loss design and one gate for all network edges, each edge switched on or off, instead of a
            design and a gate per edge.
    """

    name: str
    description: str
    designs: tuple[str, ...] | None = None
    gates: tuple[str, ...] | None = None
    label_gates: tuple[str, ...] | None = None
    shared: bool = False


@dataclass(frozen=True)
class RecipeRecord:
    """A named training recipe: values of :class:`ktg.config.TrainConfig` fields and of every node's model options.

    ``ktg train --recipe NAME`` and ``ktg search --recipe NAME`` take these values where the command line gives
    none (options given explicitly override them; the recipe overrides a dataset's suggestions), and record the
    name in the run's config.json (``train.recipe``).

    Attributes:
        name: the name ``--recipe`` takes.
        summary: what it is, in a few words (its precision among them), for ``--help``.
        train: TrainConfig fields (``ktg.config`` checks that they exist).
        node_options: model options of every node that sets none itself (``attention_residual``, say).
        search: the search's protocol, for ``ktg search``: its ``space``, ``first_rung`` and ``trial_length`` (the
            papers': their space, rungs from epoch 1, trials of the final training's epochs).
    """

    name: str
    summary: str
    train: dict[str, Any]
    node_options: dict[str, Any]
    search: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """``summary: field value, …`` for help texts and docs."""
        values = {key: " ".join(map(str, value)) if isinstance(value, tuple) else value
                  for key, value in {**self.train, **self.node_options, **self.search}.items()}
        return f"{self.summary}: " + ", ".join(f"{key} {value}" for key, value in values.items())


LOSS_DESIGNS: dict[str, DesignRecord] = {}
GATES: dict[str, GateRecord] = {}
PRUNERS: dict[str, PrunerRecord] = {}
SAMPLERS: dict[str, SamplerRecord] = {}
SPACES: dict[str, SpaceRecord] = {}
RECIPES: dict[str, RecipeRecord] = {}


def register_design(record: DesignRecord) -> DesignRecord:
    """Add a loss design; raises ValueError for a name taken or a record that contradicts itself."""
    if not record.reads or not record.reads <= set(KNOWLEDGE):
        raise ValueError(f"loss design {record.name!r} must read some of {', '.join(KNOWLEDGE)}, "
                         f"got {sorted(record.reads)}")
    if record.direction not in DIRECTIONS:
        raise ValueError(f"loss design {record.name!r}: direction must be one of {', '.join(DIRECTIONS)}")
    if (record.function is None) == (not record.parts):
        raise ValueError(f"loss design {record.name!r} needs either a function or parts, not both")
    return add_record(LOSS_DESIGNS, record, "loss design")


def composite(name: str, parts: tuple[str, ...], label: str, paper: bool = False) -> DesignRecord:
    """A design whose per-sample loss is the sum of the registered designs ``parts``; it reads what they read
    and has their (common) direction."""
    records = [LOSS_DESIGNS[part] for part in parts]
    directions = {record.direction for record in records}
    if len(directions) != 1:
        raise ValueError(f"the parts of loss design {name!r} pull and push at once: {', '.join(parts)}")
    return DesignRecord(name, None, frozenset().union(*(record.reads for record in records)), directions.pop(),
                        label, paper, tuple(parts))


def register_gate(record: GateRecord) -> GateRecord:
    """Add a gate; raises ValueError for a name taken or a record that contradicts itself."""
    if not (record.on_label_edges or record.on_network_edges):
        raise ValueError(f"gate {record.name!r} is allowed on no edge")
    teacher = GATES.get(record.teacher_gate) if record.teacher_gate is not None else None
    if record.teacher_gate is not None and (teacher is None or not teacher.on_network_edges
                                            or not record.on_label_edges or record.on_network_edges):
        raise ValueError(f"gate {record.name!r}: a teacher gate belongs on label edges only and names a "
                         f"registered network gate, got {record.teacher_gate!r}")
    return add_record(GATES, record, "gate")


def register_pruner(record: PrunerRecord) -> PrunerRecord:
    """Add a pruner; raises ValueError for a name taken."""
    return add_record(PRUNERS, record, "pruner")


def register_sampler(record: SamplerRecord) -> SamplerRecord:
    """Add a sampler; raises ValueError for a name taken."""
    return add_record(SAMPLERS, record, "sampler")


def register_space(record: SpaceRecord) -> SpaceRecord:
    """Add a search space; raises ValueError for a name taken."""
    return add_record(SPACES, record, "search space")


def register_recipe(record: RecipeRecord) -> RecipeRecord:
    """Add a training recipe; raises ValueError for a name taken."""
    return add_record(RECIPES, record, "recipe")


def design_names(paper_only: bool = False) -> tuple[str, ...]:
    """The registered designs in registration order; the papers' only with ``paper_only``."""
    return tuple(name for name, record in LOSS_DESIGNS.items() if record.paper or not paper_only)


def gate_names(paper_only: bool = False, on: str | None = None) -> tuple[str, ...]:
    """The registered gates in registration order: the papers' only with ``paper_only``; with ``on``
    (``"label"`` or ``"network"``) only those allowed on that kind of edge."""
    if on not in (None, "label", "network"):
        raise ValueError(f"on must be None, 'label' or 'network', got {on!r}")
    return tuple(name for name, record in GATES.items()
                 if (record.paper or not paper_only) and (on is None or getattr(record, f"on_{on}_edges")))


def pruner_names() -> tuple[str, ...]:
    """The registered pruners in registration order (the choices of ``ktg search --pruner``)."""
    return tuple(PRUNERS)


def sampler_names() -> tuple[str, ...]:
    """The registered samplers in registration order (the choices of ``ktg search --sampler``)."""
    return tuple(SAMPLERS)


def space_names() -> tuple[str, ...]:
    """The registered search spaces in registration order (the choices of ``ktg search --space``)."""
    return tuple(SPACES)


def recipe_names() -> tuple[str, ...]:
    """The registered recipes in registration order (the choices of ``--recipe``)."""
    return tuple(RECIPES)


# -- the records ------------------------------------------------------------------------------------------
# Labels: measure, direction, knowledge (p: class probabilities, A: attention maps, h: a stage's features,
# p̃: the probabilities of the wrong classes).

_LOGITS, _ATTENTION, _FEATURES = frozenset({"logits"}), frozenset({"attention"}), frozenset({"features"})

register_design(DesignRecord("prob_kl", "ktg.losses:prob_kl", _LOGITS, "pull", "KL pull p", paper=True))
register_design(DesignRecord("prob_cos", "ktg.losses:prob_cos", _LOGITS, "push", "cos push p", paper=True))
register_design(DesignRecord("att_mse", "ktg.losses:att_mse", _ATTENTION, "pull", "MSE pull A", paper=True))
register_design(DesignRecord("att_cos", "ktg.losses:att_cos", _ATTENTION, "push", "cos push A", paper=True))
register_design(composite("prob_kl+att_mse", ("prob_kl", "att_mse"), "KL+MSE pull p+A", paper=True))
register_design(composite("prob_cos+att_cos", ("prob_cos", "att_cos"), "cos push p+A", paper=True))
register_design(DesignRecord("hint_mse", "ktg.losses:hint_mse", _FEATURES, "pull", "MSE pull h"))
register_design(DesignRecord("hint_cos", "ktg.losses:hint_cos", _FEATURES, "push", "cos push h"))
register_design(DesignRecord("dark_cos", "ktg.losses:dark_cos", frozenset({"logits", "labels"}), "push",
                             "cos push p̃"))
register_design(DesignRecord("joint_ce", "ktg.losses:joint_ce", frozenset({"logits", "labels"}), "pull",
                             "CE joint p"))

# Colours: Okabe-Ito, distinguishable with colour-blindness.
register_gate(GateRecord("through", "ktg.gates:through", "#0072B2", paper=True))
register_gate(GateRecord(CUTOFF, "ktg.gates:cutoff", "#777777", paper=True, computed=False))
register_gate(GateRecord("linear", "ktg.gates:linear", "#E69F00", paper=True))
register_gate(GateRecord("correct", "ktg.gates:correct", "#009E73", paper=True))
register_gate(GateRecord("merit", "ktg.gates:merit", "#CC79A7", on_label_edges=False))
register_gate(GateRecord("merit_label", "ktg.gates:merit_label", "#D55E00", on_network_edges=False,
                         teacher_gate="merit"))

register_pruner(PrunerRecord(DEFAULT_PRUNER, "ktg.search.pruners:successive_halving",
                             "ktg.search.pruners:successive_halving_epochs"))
register_pruner(PrunerRecord("median", "ktg.search.pruners:median", "ktg.search.pruners:median_epochs"))
register_pruner(PrunerRecord("hyperband", "ktg.search.pruners:hyperband", "ktg.search.pruners:hyperband_epochs"))
# No pruning reads no epoch, but a study without pruning is the measurement of how well each epoch's ranking
# predicts the final one (ktg study fidelity): its trials are evaluated every epoch.
register_pruner(PrunerRecord("none", "ktg.search.pruners:no_pruning"))

register_sampler(SamplerRecord(
    DEFAULT_SAMPLER, "ktg.search.sampler:random_search",
    "uniform random search, the papers' choice: trial k draws the same graph whichever worker runs it, "
    "whatever the other trials found"))
register_sampler(SamplerRecord(
    "tpe", "ktg.search.sampler:tpe",
    "Optuna's multivariate TPE with constant liar (running trials count as poor, so parallel workers spread out); "
    "its first trials are random search's, and trial k's graph depends on the seed, k and the trials finished "
    "when it starts"))
register_sampler(SamplerRecord(
    "evolution", "ktg.search.sampler:regularised_evolution",
    "regularised (aging) evolution: each trial copies the best of a few drawn from the trials that finished last "
    "and changes one choice; its first trials are random search's, seeded like tpe"))

register_space(SpaceRecord(
    "paper", "the papers' space: a gate per label edge, a loss design and a gate per ordered pair of nodes"))
register_space(SpaceRecord(
    "labels-on", "the papers' space with every label edge on (through): no node loses its labels to a cutoff or "
    "linear label gate", label_gates=("through",)))
_SHARED = register_space(SpaceRecord(
    "shared", "one loss design and one gate for every network edge, each edge on or off, label edges on "
    "(through): a space small enough for short searches", gates=("through", "linear", "correct"),
    label_gates=("through",), shared=True))
register_space(dataclasses.replace(
    _SHARED, name="dark", description="as shared, with two designs: dark_cos (push the wrong-class probabilities "
    "apart, the one edge measured to raise a low-data ensemble) or prob_kl (dml's pull)",
    designs=("dark_cos", "prob_kl")))

# The fine-grained recipe of the ensemble-KTG public code (docs/method.md#reference-protocol), which trains in
# float32; and the same with ktg's bf16 trunk (docs/method.md#differences), a named choice, never a silent one.
_PAPER = {"epochs": 300, "batch_size": 16, "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "nesterov": False,
          "schedule": "step", "milestones": (150, 225), "gamma": 0.1, "drop_last": True}
_PAPER_SEARCH = {"space": "paper", "first_rung": 1, "trial_length": "epochs"}
register_recipe(RecipeRecord("paper", "the papers' fine-grained recipe in fp32, as the papers trained and searched",
                             {**_PAPER, "amp": False}, {"attention_residual": False}, _PAPER_SEARCH))
register_recipe(RecipeRecord("paper-bf16", "the papers' recipe with ktg's bf16 autocast trunk (attention maps in "
                             "fp32)", {**_PAPER, "amp": True}, {"attention_residual": False}, _PAPER_SEARCH))
