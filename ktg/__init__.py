"""ktg: knowledge transfer graphs for deep collaborative learning.

Several Attention Branch Networks train together; a graph says who teaches whom, with which
knowledge (class probabilities, attention maps) and when (gates). See README.md and docs/method.md.

Using a trained graph: ``ktg.load_run(run_dir, device=...)`` gives it as one ``nn.Module``
(:class:`ktg.inference.TrainedGraph`) and ``ktg.preprocess(images, run)`` the run's evaluation
pipeline. They are loaded on first use, so ``import ktg`` (and the command line's start) stays light.
"""

from __future__ import annotations

from ktg.registry import lazy_attributes

__version__ = "0.1.0"

#: Public names imported from their module when first used.
_LAZY = {"load_run": "ktg.inference", "preprocess": "ktg.inference", "TrainedGraph": "ktg.inference"}

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
