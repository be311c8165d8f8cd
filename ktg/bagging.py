"""Bagging nodes: each trains on its own bootstrap replicate of the training split, realised as loss weights."""

from __future__ import annotations

import torch

from ktg.graph import GraphSpec


def bootstrap_counts(spec: GraphSpec, num_samples: int, seed: int) -> dict[int, torch.Tensor]:
    """Per-sample Poisson(1) counts over the training split for every bagging node: how often each image
    appears in that node's bootstrap replicate (as n → ∞, the same law as drawing n of n with replacement).

    Realised as loss weights, so every node still sees the shared batch. Seeded by (seed, node).
    """
    counts = {}
    for node_index, node in enumerate(spec.nodes):
        if node.bagging:
            generator = torch.Generator().manual_seed(seed * 1_000_003 + 7919 * (node_index + 1))
            counts[node_index] = torch.poisson(torch.ones(num_samples), generator=generator)
    return counts
