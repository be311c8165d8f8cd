"""The fast training path computes what the reference path computes: bf16 autocast + channels-last + foreach
(CUDA: fused) SGD against fp32 + NCHW + for-loop SGD, the compiled step against the eager one, and no host reads
inside a step.

Every test that takes ``device`` also runs on a CUDA GPU when there is one (CI has none; on a GPU machine run
``pytest -m cuda`` or ``experiments/gpu_check.py``): there it checks what only a GPU can show, that a step
never synchronises with the host, that ``--deterministic`` repeats bit for bit, and that CUDA graphs replay the
eager step.
"""

import copy

import pytest
import torch
import torch._dynamo
from torch.overrides import TorchFunctionMode

from ktg.cli import plan
from ktg.config import TrainConfig
from ktg.engine import KnowledgeTransferGraph
from ktg.errors import KTGError
from ktg.graph import EdgeSpec, GraphSpec, NodeSpec
from ktg.models import ABNResNet
from ktg.models.abn_resnet import BasicBlock
from ktg.nonfinite import LAG, FirstNonFiniteStep
from ktg.optim import make_optimizer
from ktg.runtime import configure_kernels
from ktg.train import make_train_step

CLASSES = 5
CPU = torch.device("cpu")


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request) -> torch.device:
    return torch.device(request.param)


def nodes(seed: int, count: int = 3) -> list[ABNResNet]:
    """Narrow CIFAR-style ABNs of one block per stage (16×16 inputs give 8×8 attention maps)."""
    torch.manual_seed(seed)
    return [ABNResNet(BasicBlock, (1, 1, 1), CLASSES, stem="cifar", base_width=4) for _ in range(count)]


def heavy_spec() -> GraphSpec:
    """Every network edge pulls probabilities and attention (the benchmark's ``heavy`` graph)."""
    edges = tuple(EdgeSpec(s, t, "prob_kl+att_mse", "through") for t in range(3) for s in range(3) if s != t)
    return GraphSpec((NodeSpec("abn_resnet20"),) * 3, ("through",) * 3, edges, crop_sizes=(3, 5))


def mixed_spec(num_nodes: int = 3) -> GraphSpec:
    """Every loss design and every gate but cutoff, including ``linear``, whose weight changes every step."""
    designs = ["att_cos", "prob_kl", "prob_cos+att_cos", "prob_cos", "att_mse", "prob_kl+att_mse"]
    gates = ["linear", "correct", "through"]
    pairs = [(s, t) for t in range(num_nodes) for s in range(num_nodes) if s != t]
    edges = tuple(EdgeSpec(s, t, designs[i % 6], gates[i % 3]) for i, (s, t) in enumerate(pairs))
    return GraphSpec((NodeSpec("abn_resnet20"),) * num_nodes, tuple(gates[:num_nodes]), edges, crop_sizes=(3,))


def batches(count: int = 3, device: torch.device = CPU) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [(torch.rand(8, 3, 16, 16, generator=generator).to(device),
             torch.randint(0, CLASSES, (8,), generator=generator).to(device)) for _ in range(count)]


def train_step(graph: KnowledgeTransferGraph, *, amp=False, channels_last=False, optimizer="fast",
               compile_backend=None, compile_mode="default"):
    """A training step of ``graph`` (on its device) with the SGD ktg trains with ("fast": foreach on the CPU,
    fused on CUDA) or the public code's, which loops over the tensors ("for-loop")."""
    assert optimizer in ("fast", "for-loop"), optimizer
    if channels_last:
        graph = graph.to(memory_format=torch.channels_last)
    config = TrainConfig(lr=0.01, momentum=0.9, weight_decay=5e-4)
    if optimizer == "fast":
        sgd = make_optimizer(graph, config, next(graph.parameters()).device)
    else:
        sgd = torch.optim.SGD(graph.parameters(), lr=config.lr, momentum=config.momentum,
                              weight_decay=config.weight_decay, foreach=False)
    graph.train()
    return make_train_step(graph, sgd, amp=amp, channels_last=channels_last, compile_backend=compile_backend,
                           compile_mode=compile_mode)


def run_steps(graph: KnowledgeTransferGraph, device: torch.device = CPU, **options) -> torch.Tensor:
    """Train ``graph`` on :func:`batches` on ``device``; the loss of every edge at every step, steps × edges."""
    step = train_step(graph.to(device), **options)
    data = batches(device=device)
    return torch.stack([torch.stack(list(step(images, labels, k, len(data)).terms.values())).detach()
                        for k, (images, labels) in enumerate(data, start=1)])


@pytest.fixture
def deterministic(device):
    configure_kernels(device, deterministic=True)
    yield
    configure_kernels(device, deterministic=False)


def test_fast_and_reference_paths_give_the_same_losses(device, deterministic):
    reference = KnowledgeTransferGraph(heavy_spec(), nodes(seed=0))
    fast = copy.deepcopy(reference)
    expected = run_steps(reference, device, optimizer="for-loop")
    got = run_steps(fast, device, amp=True, channels_last=True, optimizer="fast")
    assert expected.shape == (3, 9) and not torch.equal(got, expected)  # bf16 really ran
    # bf16 keeps 8 significant bits (unit round-off 2^-8 ≈ 0.4 %); a forward through ~20 layers rounds many
    # times, and each SGD step feeds the difference back: 3 % of each edge's loss plus 0.01 over three steps.
    torch.testing.assert_close(got, expected, rtol=0.03, atol=0.01)


def test_deterministic_steps_repeat_bit_for_bit(device, deterministic):
    def trial():
        graph = KnowledgeTransferGraph(mixed_spec(), nodes(seed=0))
        losses = run_steps(graph, device, amp=True, channels_last=True, optimizer="fast")
        return losses, torch.cat([parameter.detach().flatten() for parameter in graph.parameters()])

    (first_losses, first_weights), (second_losses, second_weights) = trial(), trial()
    assert torch.equal(first_losses, second_losses) and torch.equal(first_weights, second_weights)


def test_the_compiled_step_matches_eager_and_never_recompiles_for_a_new_trial(device, deterministic):
    # A backend of our own (torch.compile's public interface) sees every graph dynamo compiles and runs it eagerly;
    # two nodes keep it short: recompiles are decided by dynamo, whatever the backend.
    compiled = []

    def eager_counting(graph_module, example_inputs):
        compiled.append(graph_module)
        return graph_module.forward

    def trial(spec, seed, compile_backend=None):
        return run_steps(KnowledgeTransferGraph(spec, nodes(seed, count=2)), device, compile_backend=compile_backend)

    torch._dynamo.reset()
    torch.testing.assert_close(trial(mixed_spec(2), 0, eager_counting), trial(mixed_spec(2), 0),
                               rtol=1e-5, atol=1e-6)
    assert len(compiled) == 1  # every node's forward in one compiled graph, no graph break

    # A second trial: another graph (other edges and gates), new weights, the same shapes.
    other = GraphSpec(mixed_spec(2).nodes, ("through", "through"), (EdgeSpec(1, 0, "prob_kl+att_mse", "through"),),
                      crop_sizes=(5,))
    with torch._dynamo.config.patch(error_on_recompile=True):
        second = trial(other, 1, eager_counting)
    assert len(compiled) == 1
    torch.testing.assert_close(second, trial(other, 1), rtol=1e-5, atol=1e-6)


class NoHostReads(TorchFunctionMode):
    """Fails on every call that copies a tensor's value to Python (a host sync on CUDA)."""

    READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.__float__,
             torch.Tensor.__int__, torch.Tensor.__index__, torch.Tensor.numpy}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.READS:
            raise AssertionError(f"the training step read a tensor back to the host with {func.__name__}")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("fast", [False, True], ids=["reference", "fast"])
def test_a_training_step_reads_nothing_back_to_the_host(fast, device):
    graph = KnowledgeTransferGraph(mixed_spec(), nodes(seed=0)).to(device)
    step = train_step(graph, amp=fast, channels_last=fast, optimizer="fast" if fast else "for-loop")
    data = batches(count=2 + LAG, device=device)
    first = step(*data[0], 1, len(data))  # the first step may build caches (the crop windows' index tensors)
    # The epoch's watch for a non-finite loss runs after every step, so it must not read back either; with
    # LAG + 2 steps it reads its record back (late, without a sync) at least once.
    watch = FirstNonFiniteStep(list(first.terms), device)
    watch.record(first.stacked()[0])
    # On CUDA, the runtime's own check also catches synchronising copies that no Python call shows.
    sync_check = device.type == "cuda"
    if sync_check:
        torch.cuda.set_sync_debug_mode("error")
    try:
        with NoHostReads():
            for k, (images, labels) in enumerate(data[1:], start=2):
                assert watch.record(step(images, labels, k, len(data)).stacked()[0]) is None
    finally:
        if sync_check:
            torch.cuda.set_sync_debug_mode("default")


@pytest.mark.cuda
def test_cuda_graphs_replay_the_eager_step():
    device = torch.device("cuda")
    eager = KnowledgeTransferGraph(mixed_spec(), nodes(seed=0))
    replayed = copy.deepcopy(eager)
    options = {"amp": True, "channels_last": True}
    expected = run_steps(eager, device, **options)
    torch._dynamo.reset()
    got = run_steps(replayed, device, compile_backend="inductor", compile_mode="reduce-overhead", **options)
    torch.testing.assert_close(got, expected, rtol=0.03, atol=0.01)  # inductor fuses bf16 math in its own order


def test_the_cli_turns_compile_on_and_off():
    def config(*options):
        return plan(["train", "--dataset", "synthetic", *options]).config

    assert config("--compile").compile and not config().compile and not config("--no-compile").compile
    assert config("--compile", "--compile-mode", "reduce-overhead").compile_mode == "reduce-overhead"
    with pytest.raises(KTGError, match="needs --compile"):
        config("--compile-mode", "reduce-overhead")


def test_the_compile_mode_reaches_torch_compile(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "compile", lambda module, **options: calls.append(options) or module)
    graph = KnowledgeTransferGraph(mixed_spec(2), nodes(0, count=2))
    optimizer = torch.optim.SGD(graph.parameters(), lr=0.1)
    make_train_step(graph, optimizer, amp=False, channels_last=False, compile_backend="inductor",
                    compile_mode="reduce-overhead")
    assert calls == [{"backend": "inductor", "mode": "reduce-overhead", "dynamic": False}]
