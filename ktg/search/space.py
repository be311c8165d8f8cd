"""The search spaces (``docs/method.md#search-spaces``) as Optuna parameters, and the exact translation between
them and graph files.

A space is a registered record (:data:`ktg.registry.SPACES`, ``ktg search --space``). For N network nodes the
papers' space draws a graph by one categorical parameter per label edge (its gate) and two per ordered pair
s ≠ t (the loss design and the gate of edge s→t), optionally N more pairs with the ensemble node as source. A
shared space draws one loss design and one gate for all network edges and switches each pair's edge on or off.
Parameter names read well in optuna-dashboard: ``label→0 gate``, ``1→0 loss``, ``1→0 gate``; in a shared space
``shared loss``, ``shared gate``, ``1→0 edge`` (on or off).

A cut-off edge keeps its drawn loss design in the graph file (gate ``cutoff``; the engine skips it; in a shared
space the shared design), so ``from_params(to_params(spec)) == spec`` for every graph of the space, and the full
N = 3 papers' space has 4³ · 24⁶ members as the paper counts it.

Optuna is imported only where a space becomes Optuna's parameters, so a space is checked (and the command line
answers a mistake) without loading it; the sampler that draws from a space is :mod:`ktg.search.sampler`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ktg.errors import KTGError
from ktg.graph import ENSEMBLE, LABEL, EdgeSpec, GraphSpec, NodeRef, NodeSpec
from ktg.registry import (
    CUTOFF,
    DEFAULT_CROP_SIZES,
    DEFAULT_SPACE,
    DEFAULT_TEMPERATURE,
    SPACES,
    design_names,
    gate_names,
)

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


def edge_param(source: NodeRef, target: int) -> str:
    """The parameter switching edge source→target on or off (:data:`EDGE_SWITCH`) in a shared space."""
    return f"{source}→{target} edge"


#: A shared space's parameters: the loss design, gate and temperature of every network edge that is on.
SHARED_LOSS, SHARED_GATE, SHARED_TEMPERATURE = "shared loss", "shared gate", "shared temperature"
#: The choices of an :func:`edge_param`: off writes the edge with gate ``cutoff``.
EDGE_SWITCH = ("on", "off")


@dataclass(frozen=True)
class SearchSpace:
    """Which graphs the search may draw.

    Attributes:
        num_nodes: N network nodes (≥ 2).
        name: the registered search space (:data:`ktg.registry.SPACES`): how edges are searched, and the choices
            that ``designs``, ``gates`` and ``label_gates`` take when not given.
        designs: loss designs a network edge may use (default: the space's, else the papers' six, the registered
            designs marked ``paper``; any other registered design when asked for).
        gates: gates a network edge may use (default: the space's, else the papers' four; drop ``cutoff`` to
            force every edge on). A shared space switches edges off itself and takes no ``cutoff`` here.
        label_gates: gates a label edge may use (default: the space's, else the papers' four).
        ensemble_as_source: also search edges ensemble→t (off in the papers).
        model: every node's model (None: the trainer's default for the image size).
        temperature, crop_sizes: fixed properties of every drawn graph (see :class:`GraphSpec`).
        models: when given, each node's model is searched among these (heterogeneous nodes, as the original
            Knowledge Transfer Graph paper does); ``model`` is then unused.
        temperatures: when given, each edge's temperature is searched among these.
    """

    num_nodes: int
    name: str = DEFAULT_SPACE
    designs: tuple[str, ...] | None = None
    gates: tuple[str, ...] | None = None
    label_gates: tuple[str, ...] | None = None
    ensemble_as_source: bool = False
    model: str | None = None
    temperature: float = DEFAULT_TEMPERATURE
    crop_sizes: tuple[int, ...] = DEFAULT_CROP_SIZES
    models: tuple[str, ...] | None = None
    temperatures: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.name not in SPACES:
            raise KTGError(f"unknown search space {self.name!r}; choose one of: {', '.join(SPACES)}")
        # The one rule for a choice of the space: given explicitly > the named space's > the papers'.
        papers = {"designs": design_names(paper_only=True), "gates": gate_names(paper_only=True, on="network"),
                  "label_gates": gate_names(paper_only=True, on="label")}
        for key, default in papers.items():
            if getattr(self, key) is None:
                own = getattr(SPACES[self.name], key)
                object.__setattr__(self, key, default if own is None else own)
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
        if self.shared and CUTOFF in self.gates:
            raise KTGError(f"the search space {self.name!r} switches each network edge on or off itself; drop "
                           f"{CUTOFF} from its gates")
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
    def shared(self) -> bool:
        """One loss design and one gate for all network edges, each edge on or off (:data:`EDGE_SWITCH`)."""
        return SPACES[self.name].shared

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
        per_node = len(self.models or (None,)) * len(self.label_gates)
        per_design = len(self.designs) * len(self.temperatures or (None,))
        if self.shared:
            # Each edge on or off; with every edge off the shared gate is in no graph file.
            per_graph = per_design * (len(self.gates) * (2 ** len(self.pairs) - 1) + 1)
        else:
            per_graph = (per_design * len(self.gates)) ** len(self.pairs)
        return per_node ** self.num_nodes * per_graph

    def _edge_params(self, source: NodeRef, target: int) -> tuple[str, str, str]:
        """The parameters of edge source→target's loss design, gate and temperature (a shared space's are
        every edge's)."""
        if self.shared:
            return SHARED_LOSS, SHARED_GATE, SHARED_TEMPERATURE
        return loss_param(source, target), gate_param(source, target), temperature_param(source, target)

    def distributions(self) -> dict[str, CategoricalDistribution]:
        """Every parameter and its choices, in the order :meth:`suggest` asks for them."""
        from optuna.distributions import CategoricalDistribution

        result: dict[str, CategoricalDistribution] = {}
        if self.models is not None:
            for node in range(self.num_nodes):
                result[model_param(node)] = CategoricalDistribution(self.models)
        for target in range(self.num_nodes):
            result[label_gate_param(target)] = CategoricalDistribution(self.label_gates)
            for source in (source for source, pair_target in self.pairs if pair_target == target):
                if self.shared:
                    result[edge_param(source, target)] = CategoricalDistribution(EDGE_SWITCH)
                else:
                    result.update(self._edge_distributions(source, target))
        if self.shared:
            result.update(self._edge_distributions(*self.pairs[0]))  # the same parameters for every pair
        return result

    def _edge_distributions(self, source: NodeRef, target: int) -> dict[str, CategoricalDistribution]:
        """The parameters of edge source→target's loss design, gate and (when searched) temperature."""
        from optuna.distributions import CategoricalDistribution

        loss, gate, temperature = self._edge_params(source, target)
        result = {loss: CategoricalDistribution(self.designs), gate: CategoricalDistribution(self.gates)}
        if self.temperatures is not None:
            result[temperature] = CategoricalDistribution(self.temperatures)
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
        edges = []
        for source, target in self.pairs:
            loss, gate, temperature = self._edge_params(source, target)
            off = self.shared and params[edge_param(source, target)] == "off"
            edges.append(EdgeSpec(source, target, params[loss], CUTOFF if off else params[gate],
                                  params.get(temperature)))
        return GraphSpec(
            nodes=tuple(NodeSpec(params.get(model_param(node), self.model)) for node in range(self.num_nodes)),
            label_gates=tuple(params[label_gate_param(t)] for t in range(self.num_nodes)),
            edges=tuple(edges), temperature=self.temperature, crop_sizes=self.crop_sizes,
            ensemble_as_source=self.ensemble_as_source, name=name,
        )

    def to_params(self, spec: GraphSpec) -> dict[str, Any]:
        """The parameters of ``spec`` (e.g. to enqueue a known graph); raises KTGError outside the space.

        A pair the graph does not list counts as cut off, with the space's first design as its loss. In a shared
        space the edges that are on must share one design, gate and temperature, which a cut-off edge does not
        matter to unless every edge is off (then the first pair's design and temperature are kept, and the gate,
        in no graph file, is the space's first).
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
        edges = [by_pair.get((source, target), EdgeSpec(source, target, self.designs[0], CUTOFF))
                 for source, target in self.pairs]
        if self.shared:
            on = [edge for edge in edges if edge.gate != CUTOFF]
            kept = on or edges[:1]  # every edge off: the first pair's cut-off edge keeps the shared choices
            params[SHARED_LOSS] = self._shared("loss design", [edge.loss for edge in kept])
            params[SHARED_GATE] = self._shared("gate", [edge.gate for edge in on]) if on else self.gates[0]
            if self.temperatures is not None:
                params[SHARED_TEMPERATURE] = self._shared("temperature", [self._temperature(e) for e in kept])
        for edge in edges:
            if self.shared:
                params[edge_param(edge.source, edge.target)] = EDGE_SWITCH[edge.gate == CUTOFF]
                continue
            params[loss_param(edge.source, edge.target)] = edge.loss
            params[gate_param(edge.source, edge.target)] = edge.gate
            if self.temperatures is not None:
                params[temperature_param(edge.source, edge.target)] = self._temperature(edge)
        self.from_params(params)  # checks every choice against the space
        return params

    def _temperature(self, edge: EdgeSpec) -> float:
        """The searched temperature of ``edge``: its own, or the space's first for a graph that sets none."""
        return edge.temperature if edge.temperature is not None else self.temperatures[0]

    def _shared(self, what: str, values: list[Any]) -> Any:
        """The one value of ``what`` that the edges of a graph of a shared space share; KTGError for more."""
        distinct = list(dict.fromkeys(values))
        if len(distinct) > 1:
            raise KTGError(f"the graph's network edges use more than one {what} ({', '.join(map(str, distinct))}); "
                           f"the search space {self.name!r} shares one among all edges")
        return distinct[0]

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description, stored with the study so every worker can check it searches the same space."""
        return {"name": self.name, "num_nodes": self.num_nodes, "designs": list(self.designs),
                "gates": list(self.gates), "label_gates": list(self.label_gates),
                "ensemble_as_source": self.ensemble_as_source,
                "model": self.model, "temperature": self.temperature, "crop_sizes": list(self.crop_sizes),
                "models": None if self.models is None else list(self.models),
                "temperatures": None if self.temperatures is None else list(self.temperatures)}
