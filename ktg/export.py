"""Export a trained graph as one model file, ONNX or TorchScript, that runs without ktg.

The file holds the whole ensemble: it takes a normalised float batch N×3×S×S (N free) and returns the ensemble's
logits, and optionally every node's logits and attention maps. A JSON file beside it says what a deployer needs:
the class names, the input size, the preprocessing that turns a photo into that input, and what each output
holds. The same description travels inside the model file (ONNX metadata ``ktg``, TorchScript extra file
``ktg.json``).

Every export is verified before it is kept: the written file is run (onnxruntime, ``torch.jit.load``) on a batch
of another size than the one it was traced with, and compared to the PyTorch model; a difference beyond the
tolerance removes the file and raises :class:`~ktg.errors.KTGError` with the largest difference.

ONNX files come from PyTorch's TorchScript-based exporter: for these convolutional networks both of PyTorch's
exporters write models that agree with PyTorch to about 1e-5, and this one takes a twentieth of the time (1 s
against 19 s for a 3-node graph of narrow ResNet-20s on a CPU); the verification above checks every file.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ktg import __version__
from ktg.errors import KTGError
from ktg.inference import TrainedGraph, load_run
from ktg.io import atomic_path, write_json

EXPORT_FORMATS = ("onnx", "torchscript")
#: The outputs an export may hold, in this order; ``logits`` always.
OUTPUTS = ("logits", "node_logits", "attention")
ONNX_OPSET = 17
#: The batch size the model is traced with, and the other one it is verified on.
TRACE_BATCH, CHECK_BATCH = 2, 3


class _Exported(nn.Module):
    """The graph with plain tensor outputs: the named fields of :class:`~ktg.engine.GraphOutputs`."""

    def __init__(self, model: TrainedGraph, outputs: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.names = tuple(outputs)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        outputs = self.model.outputs(inputs)
        values = tuple(getattr(outputs, name) for name in self.names)
        return values[0] if len(values) == 1 else values


def description_path(out: str | Path) -> Path:
    """Where the JSON description of the model file ``out`` goes: its name plus ``.json`` (``model.onnx.json``)."""
    out = Path(out)
    return out.with_name(out.name + ".json")


def describe(model: TrainedGraph, fmt: str, file: Path, outputs: Sequence[str]) -> dict[str, Any]:
    """What the exported file holds and how to feed it: the content of its JSON file."""
    n, c, s = model.num_nodes, len(model.classes), model.image_size
    maps = model.outputs(torch.zeros(1, 3, s, s, device=model.device)).attention.shape[-1]
    meaning = {
        "logits": (["batch", c], "the ensemble's logits: the mean of the member nodes' logits; softmax gives "
                                 "class probabilities, argmax the predicted class"),
        "node_logits": ([n, "batch", c], "every node's perception-branch logits (node, image, class)"),
        "attention": ([n, "batch", maps, maps], "every node's attention map in [0, 1] (node, image, row, column); "
                                                "upsample it to the input's size to overlay it"),
    }
    return {
        "format": fmt,
        "file": file.name,
        "ktg_version": __version__,
        "dataset": model.dataset,
        "epoch": model.epoch,
        "epochs": model.epochs,
        "classes": model.classes,
        "input": {"name": "input", "shape": ["batch", 3, s, s], "dtype": "float32",
                  "meaning": "a batch of preprocessed RGB images (see preprocessing)"},
        "outputs": [{"name": name, "shape": meaning[name][0], "meaning": meaning[name][1]} for name in outputs],
        "nodes": [{"index": i, "model": node.model} for i, node in enumerate(model.graph.spec.nodes)],
        "ensemble_members": list(model.members),
        "preprocessing": model.transform.describe(),
    }


def export_run(
    run_dir: str | Path,
    out: str | Path,
    fmt: str,
    *,
    outputs: Sequence[str] = ("logits",),
    tolerance: float = 1e-4,
) -> dict[str, Any]:
    """Export the trained graph of ``run_dir`` to ``out`` as ``fmt`` (``onnx`` or ``torchscript``) and write
    its description beside it (:func:`description_path`); returns that description, which also records the
    verification (batch size and largest difference per output).

    Args:
        outputs: which of :data:`OUTPUTS` the model returns, ``logits`` first.
        tolerance: the largest absolute difference to the PyTorch model (fp32, CPU) that is accepted.
    """
    out = Path(out)
    if fmt not in EXPORT_FORMATS:
        raise KTGError(f"unknown export format {fmt!r}; choose one of: {', '.join(EXPORT_FORMATS)}")
    unknown = [name for name in outputs if name not in OUTPUTS]
    if unknown or not outputs or outputs[0] != "logits" or len(set(outputs)) != len(outputs):
        raise KTGError(f"outputs must be 'logits' followed by any of node_logits, attention; got {list(outputs)}")
    if tolerance < 0:
        raise KTGError(f"the tolerance must not be negative, got {tolerance}")
    write, run_file = (_write_onnx, _run_onnx) if fmt == "onnx" else (_write_torchscript, _run_torchscript)
    if fmt == "onnx":
        _require_onnx()

    model = load_run(run_dir, "cpu")
    module = _Exported(model, outputs).eval()
    size = model.image_size
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(TRACE_BATCH, 3, size, size, generator=generator)
    check = torch.randn(CHECK_BATCH, 3, size, size, generator=generator)
    with torch.no_grad():
        description = describe(model, fmt, out, outputs)
        expected = module(check)
    expected = expected if isinstance(expected, tuple) else (expected,)
    with atomic_path(out) as tmp:
        write(module, example, tmp, description)
        differences = {name: float((got - want).abs().max())
                       for name, got, want in zip(outputs, run_file(tmp, check), expected)}
        worst = max(differences, key=differences.__getitem__)
        if differences[worst] > tolerance:
            raise KTGError(f"the exported {fmt} model differs from PyTorch by up to {differences[worst]:.3g} in "
                           f"{worst} (tolerance {tolerance:g}); nothing was written")
        description["verified"] = {"batch_size": CHECK_BATCH, "traced_batch_size": TRACE_BATCH,
                                   "tolerance": tolerance, "max_abs_difference": differences}
        # before the model file takes its place: a description that cannot be written leaves no model without one
        write_json(description_path(out), description)
    return description


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as error:
        raise KTGError(f"ONNX export needs the packages of the export extra ({error.name} is missing): "
                       "pip install -e '.[export]'") from None


def _write_onnx(module: _Exported, example: torch.Tensor, path: Path, description: dict) -> None:
    import onnx

    batch_axis = {"logits": 0, "node_logits": 1, "attention": 1}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript-based exporter; see the module doc
        torch.onnx.export(module, (example,), str(path), dynamo=False, input_names=["input"],
                          output_names=list(module.names), opset_version=ONNX_OPSET,
                          dynamic_axes={"input": {0: "batch"}, **{name: {batch_axis[name]: "batch"}
                                                                  for name in module.names}})
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "ktg", json.dumps(description)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def _run_onnx(path: Path, inputs: torch.Tensor) -> list[torch.Tensor]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [torch.from_numpy(value) for value in session.run(None, {"input": inputs.numpy()})]


def _torchscript_quietly(function: Callable, *args, **kwargs):
    # torch.jit is deprecated in favour of torch.export, but TorchScript is the format asked for here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return function(*args, **kwargs)


def _write_torchscript(module: _Exported, example: torch.Tensor, path: Path, description: dict) -> None:
    with torch.no_grad():
        traced = _torchscript_quietly(torch.jit.trace, module, example, check_trace=False)
    _torchscript_quietly(torch.jit.save, traced, str(path), _extra_files={"ktg.json": json.dumps(description)})


def _run_torchscript(path: Path, inputs: torch.Tensor) -> list[torch.Tensor]:
    loaded = _torchscript_quietly(torch.jit.load, str(path), map_location="cpu")
    with torch.no_grad():
        result = loaded(inputs)
    return list(result) if isinstance(result, tuple) else [result]
