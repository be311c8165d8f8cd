"""What one training step of a graph dispatches: operators and CPU time for the papers' graphs and for each
method beyond them, to show what a method costs when used and that it costs nothing when unused.

Operators are counted exactly (views excluded: they only relabel memory); in eager mode each is about one
kernel launch, which is what a step costs on a GPU at small batches, so the counts carry over to any device.
A step here is the part a graph defines: every node's forward, the gated losses, and the backward.

The script uses only what ktg's engine has offered since its first version (``build_graph``, the graph's
forward and ``losses``), so it measures any checkout; a row whose graph that checkout cannot express says so::

    python experiments/operators.py                                   # this checkout
    git worktree add /tmp/before <commit>
    PYTHONPATH=/tmp/before python experiments/operators.py --json before.json

``--amp`` counts the step under bf16 autocast, as CUDA trains. There the ABNs compute the attention map in fp32
(the argmax that centres the crops must not read bf16 ties), which costs 2 operators per node and step:
``independent`` 1,355 against 1,349 before (43c77a5), ``heavy`` 1,449 against 1,446; ``mixed`` drops from 1,737
to 1,731, since its attention losses no longer cast bf16 maps. Without ``--amp`` every count is unchanged.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

import ktg
from ktg.engine import build_graph
from ktg.errors import KTGError
from ktg.graph import EdgeSpec, GraphSpec, NodeSpec
from ktg.io import write_json
from ktg.models import create_model


def _load_counter() -> type:
    # From this script's own checkout, whichever checkout PYTHONPATH measures: older ones lack the module.
    path = Path(__file__).resolve().parents[1] / "ktg" / "profiling.py"
    spec = importlib.util.spec_from_file_location("ktg_profiling_of_this_checkout", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CountOperators


CountOperators = _load_counter()
CLASSES = 10
CROP_SIZES = (3, 5, 7)


def pairs(num_nodes: int) -> list[tuple[int, int]]:
    return [(s, t) for t in range(num_nodes) for s in range(num_nodes) if s != t]


def graph_of(edges: list[EdgeSpec], label_gates: tuple[str, ...] = ("through",) * 3,
             nodes: tuple[NodeSpec, ...] | None = None) -> GraphSpec:
    nodes = nodes or (NodeSpec("abn_resnet20", {"base_width": 8}),) * len(label_gates)
    return GraphSpec(nodes, label_gates, tuple(edges), crop_sizes=CROP_SIZES)


def mixed(workdir: Path) -> GraphSpec:
    """Every design of the papers once, and every gate but cutoff: a graph the search could draw."""
    designs = ["prob_kl", "att_mse", "prob_cos+att_cos", "prob_kl+att_mse", "att_cos", "prob_cos"]
    gates = ["through", "linear", "correct", "through", "correct", "linear"]
    return graph_of([EdgeSpec(s, t, d, g) for (s, t), d, g in zip(pairs(3), designs, gates)],
                    ("through", "correct", "linear"))


def dml_with(**edge_fields) -> GraphSpec:
    return graph_of([EdgeSpec(s, t, "prob_kl", "through", **edge_fields) for s, t in pairs(3)])


def frozen_teacher(workdir: Path) -> GraphSpec:
    options = {"base_width": 8}
    weights = workdir / "teacher.pt"
    torch.save(create_model("abn_resnet20", CLASSES, **options).state_dict(), weights)
    teacher = NodeSpec("abn_resnet20", options, {"file": str(weights)}, frozen=True)
    nodes = (teacher,) + (NodeSpec("abn_resnet20", options),) * 2
    return graph_of([EdgeSpec(s, t, "prob_kl", "through") for s, t in pairs(3) if t != 0],
                    ("cutoff", "through", "through"), nodes)


def hint(workdir: Path) -> GraphSpec:
    edges = [EdgeSpec(s, t, "prob_kl", "through") for s, t in pairs(3)]
    edges[0] = EdgeSpec(edges[0].source, edges[0].target, "hint_mse", "through", stage="layer2")
    return graph_of(edges)


def merit(workdir: Path) -> GraphSpec:
    edges = [EdgeSpec(s, t, "prob_kl", "merit" if (s, t) == (1, 0) else "through") for s, t in pairs(3)]
    return graph_of(edges, ("merit_label", "through", "through"))


def bagging(workdir: Path) -> GraphSpec:
    nodes = (NodeSpec("abn_resnet20", {"base_width": 8}, bagging=True),) * 3
    return graph_of([EdgeSpec(s, t, "prob_kl", "through") for s, t in pairs(3)], nodes=nodes)


#: name → (what it is, how to build it). The first five are the papers' graphs; the rest each use one method
#: beyond the papers on top of ``dml`` (every edge prob_kl/through), which is their yardstick.
#: A maker gets a folder for any file its graph needs.
GRAPHS: dict[str, tuple[str, Callable[[Path], GraphSpec]]] = {
    "independent": ("label edges only", lambda workdir: graph_of([])),
    "dml": ("every edge prob_kl/through", lambda workdir: dml_with()),
    "heavy": ("every edge prob_kl+att_mse/through",
              lambda workdir: graph_of([EdgeSpec(s, t, "prob_kl+att_mse", "through") for s, t in pairs(3)])),
    "mixed": ("every design, gates mixed", mixed),
    "temperature": ("dml, T = 4 on every edge", lambda workdir: dml_with(temperature=4.0)),
    "frozen": ("dml, node 0 a frozen teacher", frozen_teacher),
    "hint": ("dml, one edge hint_mse on layer2", hint),
    "merit": ("dml, one merit edge + merit_label", merit),
    "bagging": ("dml, every node bagging", bagging),
}


def measure(spec: GraphSpec, batch_size: int, image_size: int, repeats: int, amp: bool = False) -> dict:
    torch.manual_seed(0)
    try:
        graph = build_graph(spec, CLASSES, image_size)
    except TypeError:  # checkouts before hint edges took no image size
        graph = build_graph(spec, CLASSES)
    graph.train()
    images, labels = torch.rand(batch_size, 3, image_size, image_size), torch.randint(0, CLASSES, (batch_size,))
    weights = {i: torch.poisson(torch.ones(batch_size)) for i, node in enumerate(spec.nodes)
               if getattr(node, "bagging", False)}

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            outputs = graph(images)
            losses = (graph.losses(outputs, labels, 1, 100, weights) if weights
                      else graph.losses(outputs, labels, 1, 100))
        losses.total.backward()

    step()  # the first step builds what later steps reuse
    with CountOperators() as counter:
        step()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    return {"operators": counter.count, "step_ms": 1000 * statistics.median(seconds)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7, help="timed steps per graph; the median is shown")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: steadier timings)")
    parser.add_argument("--amp", action="store_true", help="forward and losses under bf16 autocast, as on CUDA")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = {}
    with tempfile.TemporaryDirectory() as workdir:
        for name, (description, make) in GRAPHS.items():
            try:
                spec = make(Path(workdir))
            except (TypeError, ValueError, KTGError) as error:  # a field or value this checkout does not know
                rows[name] = {"unsupported": str(error).splitlines()[0]}
                continue
            print(f"measuring {name}", file=sys.stderr)
            rows[name] = {"description": description,
                          **measure(spec, args.batch_size, args.image_size, args.repeats, args.amp)}

    print(f"\nktg at {ktg.__file__.rsplit('/ktg/', 1)[0]}, torch {torch.__version__}, CPU, {args.threads} thread(s): "
          f"3 × abn_resnet20 (width 8), batch {args.batch_size}, {args.image_size} px; forward + losses + backward"
          f"{', bf16 autocast' if args.amp else ''}")
    print(f"{'graph':<13}{'what':<38}{'ops/step':>9}{'× dml':>7}{'step ms':>9}")
    dml = rows["dml"].get("operators")
    for name, r in rows.items():
        if "unsupported" in r:
            print(f"{name:<13}{'not expressible in this checkout':<38}")
            continue
        ratio = f"{r['operators'] / dml:.2f}" if dml else "—"
        print(f"{name:<13}{r['description']:<38}{r['operators']:>9}{ratio:>7}{r['step_ms']:>9.1f}")
    if args.json:
        write_json(args.json, {"settings": vars(args), "torch": torch.__version__, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
