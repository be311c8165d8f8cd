"""ktg: knowledge transfer graphs for deep collaborative learning.

Several Attention Branch Networks train together; a graph says who teaches whom, with which
knowledge (class probabilities, attention maps) and when (gates). See README.md and SPEC.
"""

__version__ = "0.1.0"
