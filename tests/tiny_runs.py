"""Graphs small enough for the test suite: narrow nodes on 16-pixel images."""

from ktg.graph import GraphSpec

TINY = {"base_width": 4}


def narrow(spec: GraphSpec, image_size: int = 16) -> GraphSpec:
    """``spec`` resolved for ``image_size`` with nodes of base width 4, ready for :func:`ktg.train.train`."""
    return spec.resolved(image_size, TINY)
