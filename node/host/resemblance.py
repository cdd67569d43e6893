"""How much each model of a BLADE-FL block looks like a peer's: the plagiarism figures.

Every client can see plagiarism in the block it aggregates, so it measures it. For each model
w_i with update u_i (w_i minus the previous global model) the nearest peer j is the one with the
largest copy coefficient <u_i, u_j> / |u_j|^2, which is 1 when u_i holds all of u_j, however much
noise was added on top (the noise is independent of u_j). For that pair it reports the cosine
similarity of the models and of the updates, and the spread of w_i - w_j, which for a noisy copy
is the noise's own standard deviation (sigma) and for honest clients is far smaller.

A node writes these entries to its rounds.jsonl (node/datadir.py) and the run report reads them
back into the same dataclass, so the two cannot disagree on the fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Resemblance:
    """How much one model of a block looks like another client's model of the same block."""

    client: str  # hex address
    nearest: str  # the peer whose update it holds most of
    model_cosine: float
    update_cosine: float
    copy_coefficient: float
    difference_std: float


def resemblances(
    previous_global: np.ndarray, models: Sequence[tuple[str, np.ndarray]]
) -> list[Resemblance]:
    """For each model, its nearest peer by copy coefficient (needs two models or more)."""
    if len(models) < 2:
        return []
    names = [name for name, _ in models]
    weights = np.stack([w for _, w in models]).astype(np.float64)
    updates = weights - previous_global.astype(np.float64)
    gram = updates @ updates.T
    squares = np.clip(np.diag(gram), 1e-30, None)
    copy = gram / squares[np.newaxis, :]
    np.fill_diagonal(copy, -np.inf)
    model_norms = np.linalg.norm(weights, axis=1)
    out = []
    for i, name in enumerate(names):
        j = int(np.argmax(copy[i]))
        out.append(
            Resemblance(
                client=name,
                nearest=names[j],
                model_cosine=float(weights[i] @ weights[j] / (model_norms[i] * model_norms[j])),
                update_cosine=float(gram[i, j] / np.sqrt(squares[i] * squares[j])),
                copy_coefficient=float(copy[i, j]),
                difference_std=float(np.std(weights[i] - weights[j])),
            )
        )
    return out
