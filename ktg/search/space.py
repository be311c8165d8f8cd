"""The search space (``docs/method.md#search``) as Optuna parameters, and the exact translation between them and
graph files.

For N network nodes a graph is chosen by one categorical parameter per label edge (its gate) and two per
ordered pair s ≠ t (the loss design and the gate of edge s→t), optionally N more pairs with the ensemble node as
source. Parameter names read well in optuna-dashboard: ``label→0 gate``, ``1→0 loss``, ``1→0 gate``.

A cut-off edge keeps its drawn loss design in the graph file (gate ``cutoff``; the engine skips it), so
``from_params(to_params(spec)) == spec`` for every graph of the space, and the full N = 3 space has
4³ · 24⁶ members as the paper counts it.

Optuna is imported only where a space becomes Optuna's parameters, so a space is checked (and the command line
answers a mistake) without loading it; the sampler that draws from a space is :mod:`ktg.search.sampler`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ktg.errors import KTGError
from ktg.graph import ENSEMBLE, LABEL, EdgeSpec, GraphSpec, NodeRef, NodeSpec
from ktg.registry import CUTOFF, DEFAULT_CROP_SIZES, DEFAULT_TEMPERATURE, design_names, gate_names

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import CategoricalDistribution


def label_gate_param(target: int) -> str:
    """The parameter holding the gate of the label edge into ``target``."""
    return f"{LABEL}→{target} gate"


def loss_param(source: NodeRef, target: int) -> str:
    return f"{source}→{target} loss"


def gate_param(source: NodeRef, target: int) -> str:
    return f"{source}→{target} gate"


def temperature_param(source: NodeRef, target: int) -> str:
    return f"{source}→{target} temperature"


def model_param(node: int) -> str:
    return f"node {node} model"


@dataclass(frozen=True)
class SearchSpace:
    """Which graphs the search may draw.

    Attributes:
        num_nodes: N network nodes (≥ 2).
        designs: loss designs a network edge may use (default: the papers' six, the registered designs marked
            ``paper``; any other registered design when asked for).
        gates: gates a network edge may use (default: the papers' four; drop ``cutoff`` to force every edge on).
        label_gates: gates a label edge may use (default: the papers' four).
        ensemble_as_source: also search edges ensemble→t (off in the papers).
        model: every node's model (None: the trainer's default for the image size).
        temperature, crop_sizes: fixed properties of every drawn graph (see :class:`GraphSpec`).
        models: when given, each node's model is searched among these (heterogeneous nodes, as the original
            Knowledge Transfer Graph paper does); ``model`` is then unused.
        temperatures: when given, each edge's temperature is searched among these.
    """

    num_nodes: int
    designs: tuple[str, ...] = field(default_factory=lambda: design_names(paper_only=True))
    gates: tuple[str, ...] = field(default_factory=lambda: gate_names(paper_only=True, on="network"))
    label_gates: tuple[str, ...] = field(default_factory=lambda: gate_names(paper_only=True, on="label"))
    ensemble_as_source: bool = False
    model: str | None = None
    temperature: float = DEFAULT_TEMPERATURE
    crop_sizes: tuple[int, ...] = DEFAULT_CROP_SIZES
    models: tuple[str, ...] | None = None
    temperatures: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.temperatures is not None and (not self.temperatures or min(self.temperatures) <= 0):
            raise KTGError(f"searched temperatures must be positive numbers, got {list(self.temperatures)}")
        if self.models is not None and not self.models:
            raise KTGError("the searched models need at least one model name")
        if self.num_nodes < 2:
            raise KTGError(f"a graph search needs --nodes ≥ 2, got {self.num_nodes}")
        for what, chosen, allowed in (("designs", self.designs, design_names()), ("gates", self.gates, gate_names()),
                                      ("label gates", self.label_gates, gate_names())):
            if not chosen:
                raise KTGError(f"the search space needs at least one of the {what}")
            unknown = [name for name in chosen if name not in allowed]
            if unknown:
                raise KTGError(f"unknown {what} {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}")
            if len(set(chosen)) != len(chosen):
                raise KTGError(f"the {what} of the search space are listed twice: {', '.join(chosen)}")
        # Every choice must make a valid graph on its own (some designs or gates need more than a name).
        for design in self.designs:
            for gate in self.gates:
                self._probe(self.label_gates[0], design, gate)
        for gate in self.label_gates:
            self._probe(gate, self.designs[0], self.gates[0])

    def _probe(self, label_gate: str, design: str, gate: str) -> None:
        try:
            GraphSpec((NodeSpec(),) * 2, (label_gate,) * 2, (EdgeSpec(1, 0, design, gate),))
        except KTGError as error:
            raise KTGError(f"the search space cannot use label gate {label_gate!r} with loss design {design!r} "
                           f"and gate {gate!r}: {error}") from None

    @property
    def pairs(self) -> list[tuple[NodeRef, int]]:
        """Every searched (source, target), target-major: 1→0, 2→0, …, 0→1, …, then ensemble→t if searched."""
        sources: list[NodeRef] = list(range(self.num_nodes))
        pairs: list[tuple[NodeRef, int]] = [(s, t) for t in range(self.num_nodes) for s in sources if s != t]
        if self.ensemble_as_source:
            pairs += [(ENSEMBLE, t) for t in range(self.num_nodes)]
        return pairs

    @property
    def size(self) -> int:
        """How many distinct graph files the space holds (4³ · 24⁶ for the paper's N = 3)."""
        per_edge = len(self.designs) * len(self.gates) * len(self.temperatures or (None,))
        per_node = len(self.models or (None,)) * len(self.label_gates)
        return per_node ** self.num_nodes * per_edge ** len(self.pairs)

    def distributions(self) -> dict[str, CategoricalDistribution]:
        """Every parameter and its choices, in the order :meth:`suggest` asks for them."""
        from optuna.distributions import CategoricalDistribution

        result: dict[str, CategoricalDistribution] = {}
        if self.models is not None:
            for node in range(self.num_nodes):
                result[model_param(node)] = CategoricalDistribution(self.models)
        for target in range(self.num_nodes):
            result[label_gate_param(target)] = CategoricalDistribution(self.label_gates)
            for source, pair_target in self.pairs:
                if pair_target == target:
                    result[loss_param(source, target)] = CategoricalDistribution(self.designs)
                    result[gate_param(source, target)] = CategoricalDistribution(self.gates)
                    if self.temperatures is not None:
                        result[temperature_param(source, target)] = CategoricalDistribution(self.temperatures)
        return result

    def suggest(self, trial: optuna.trial.BaseTrial, number: int | None = None) -> GraphSpec:
        """Draw a graph through ``trial`` (a live trial, or a ``FixedTrial`` to rebuild a known one), named after
        trial ``number`` (default: ``trial``'s own; a retry's graph is its original's)."""
        params = {name: trial.suggest_categorical(name, dist.choices)
                  for name, dist in self.distributions().items()}
        return self.from_params(params, name=f"trial {trial.number if number is None else number}")

    def from_params(self, params: dict[str, Any], name: str | None = None) -> GraphSpec:
        """The graph that ``params`` (parameter name → choice) describe; every parameter must be present."""
        expected = self.distributions()
        missing = [key for key in expected if key not in params]
        extra = [key for key in params if key not in expected]
        if missing or extra:
            raise KTGError(f"these parameters do not describe a graph of this search space "
                           f"(missing: {', '.join(missing) or 'none'}; unexpected: {', '.join(extra) or 'none'})")
        for key, dist in expected.items():
            if params[key] not in dist.choices:
                raise KTGError(f"parameter {key!r} = {params[key]!r} is outside the search space; "
                               f"allowed: {', '.join(map(str, dist.choices))}")
        edges = tuple(EdgeSpec(source, target, params[loss_param(source, target)], params[gate_param(source, target)],
                               params.get(temperature_param(source, target)))
                      for source, target in self.pairs)
        return GraphSpec(
            nodes=tuple(NodeSpec(params.get(model_param(node), self.model)) for node in range(self.num_nodes)),
            label_gates=tuple(params[label_gate_param(t)] for t in range(self.num_nodes)),
            edges=edges, temperature=self.temperature, crop_sizes=self.crop_sizes,
            ensemble_as_source=self.ensemble_as_source, name=name,
        )

    def to_params(self, spec: GraphSpec) -> dict[str, Any]:
        """The parameters of ``spec`` (e.g. to enqueue a known graph); raises KTGError outside the space.

        A pair the graph does not list counts as cut off, with the space's first design as its loss.
        """
        if spec.num_nodes != self.num_nodes:
            raise KTGError(f"the graph has {spec.num_nodes} nodes, the search space {self.num_nodes}")
        by_pair = {(edge.source, edge.target): edge for edge in spec.edges}
        unsearched = sorted(str(pair) for pair in set(by_pair) - set(self.pairs))
        if unsearched:
            raise KTGError(f"the graph has edges the search space does not search: {', '.join(unsearched)}")
        params: dict[str, Any] = {}
        if self.models is not None:
            for node in range(self.num_nodes):
                params[model_param(node)] = spec.nodes[node].model
        for target in range(self.num_nodes):
            params[label_gate_param(target)] = spec.label_gates[target]
        for source, target in self.pairs:
            edge = by_pair.get((source, target), EdgeSpec(source, target, self.designs[0], CUTOFF))
            params[loss_param(source, target)] = edge.loss
            params[gate_param(source, target)] = edge.gate
            if self.temperatures is not None:
                params[temperature_param(source, target)] = (
                    edge.temperature if edge.temperature is not None else self.temperatures[0])
        self.from_params(params)  # checks every choice against the space
        return params

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description, stored with the study so every worker can check it searches the same space."""
        return {"num_nodes": self.num_nodes, "designs": list(self.designs), "gates": list(self.gates),
                "label_gates": list(self.label_gates), "ensemble_as_source": self.ensemble_as_source,
                "model": self.model, "temperature": self.temperature, "crop_sizes": list(self.crop_sizes),
                "models": None if self.models is None else list(self.models),
                "temperatures": None if self.temperatures is None else list(self.temperatures)}
