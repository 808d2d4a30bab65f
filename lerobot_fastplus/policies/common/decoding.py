"""Grammar of the split layout for constrained decoding, and the rule that fills steps a decode did not yield.

Candidates are the ids the decoder scores, in this order: the ``n`` FAST ids, then SPLIT, then EOS (BOS is
never generated). Which candidates may come next depends only on where a sequence is:

* right after BOS or SPLIT (an empty sub-chunk): FAST ids only;
* inside sub-chunk ``j < n_subchunks - 1``: FAST ids or SPLIT;
* inside the last sub-chunk: FAST ids or EOS;
* after EOS the sequence is done and keeps emitting EOS (padding).

So every sequence has at most ``n_subchunks`` non-empty sub-chunks and ends with EOS exactly when the last
one closes. Core pi0_fast's layout (one FAST chunk closed by ``|``) is the case ``n_subchunks == 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class GrammarState:
    """Per-row decoding state: current sub-chunk index, whether it is still empty, whether EOS was emitted."""

    subchunk: Tensor
    empty: Tensor
    done: Tensor

    @classmethod
    def start(cls, batch_size: int, device: torch.device) -> GrammarState:
        zeros = torch.zeros(batch_size, dtype=torch.bool, device=device)
        return cls(torch.zeros(batch_size, dtype=torch.long, device=device), ~zeros, zeros)


class SplitGrammar:
    """Legal-candidate masks and state updates for ``n_fast`` FAST ids and ``n_subchunks`` sub-chunks."""

    def __init__(self, n_fast: int, n_subchunks: int) -> None:
        self.n_fast = n_fast
        self.n_subchunks = n_subchunks
        self.split = n_fast  # candidate indices
        self.eos = n_fast + 1

    @property
    def n_candidates(self) -> int:
        return self.n_fast + 2

    def legal(self, state: GrammarState) -> Tensor:
        """Bool ``[B, n_candidates]``: which candidates may come next (only EOS once a row is done)."""
        batch = state.done.shape[0]
        mask = torch.zeros(batch, self.n_candidates, dtype=torch.bool, device=state.done.device)
        mask[:, : self.n_fast] = ~state.done[:, None]
        last = state.subchunk >= self.n_subchunks - 1
        mask[:, self.split] = ~state.done & ~state.empty & ~last
        mask[:, self.eos] = state.done | (~state.empty & last)
        return mask

    def advance(self, state: GrammarState, chosen: Tensor) -> GrammarState:
        """State after each row emitted candidate ``chosen`` (``[B]``)."""
        is_split = chosen == self.split
        return GrammarState(
            subchunk=state.subchunk + is_split.long(),
            empty=is_split,
            done=state.done | (chosen == self.eos),
        )


def choose(logits: Tensor, legal: Tensor, temperature: float, generator: torch.Generator | None = None) -> Tensor:
    """Pick one legal candidate per row: argmax when ``temperature == 0``, else sample ``softmax(logits / T)``."""
    masked = logits.float().masked_fill(~legal, float("-inf"))
    if temperature == 0:
        return masked.argmax(dim=-1)
    probs = torch.softmax(masked / temperature, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def fill_undecoded_chunks(
    actions: np.ndarray, step_valid: np.ndarray, previous: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Rows with no decoded step repeat ``previous[row]`` (the last action executed) when known, else stay at 0.

    ``actions`` already holds the nearest decoded step in the missing steps of partly decoded rows (SplitLayout's
    rule). Returns the actions and a bool per row: True where nothing was decoded and no previous action existed,
    so the row holds the normalised-space origin (the dataset's central action), which the caller reports.
    """
    empty = ~step_valid.any(axis=1)
    if previous is not None and previous.shape == (actions.shape[0], actions.shape[2]):
        actions[empty] = previous[empty][:, None, :]
        return actions, np.zeros_like(empty)
    return actions, empty
