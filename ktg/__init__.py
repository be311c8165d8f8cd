"""ktg: knowledge transfer graphs for deep collaborative learning.

Several Attention Branch Networks train together; a graph says who teaches whom, with which
knowledge (class probabilities, attention maps) and when (gates). See README.md and docs/method.md.

Using a trained graph: ``ktg.load_run(run_dir, device=...)`` gives it as one ``nn.Module``
(:class:`ktg.inference.TrainedGraph`) and ``ktg.preprocess(images, run)`` the run's evaluation
pipeline. They are loaded on first use, so ``import ktg`` (and the command line's start) stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public names imported from their module when first used.
_LAZY = {"load_run": "ktg.inference", "preprocess": "ktg.inference", "TrainedGraph": "ktg.inference"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ktg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
