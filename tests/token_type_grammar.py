"""The grammar the decoders used before the exact one, kept for the guard test that shows why it was replaced.

It only knew token types: FAST ids anywhere inside a sub-chunk, SPLIT / EOS after at least one FAST id. It did not
count coefficients or track multi-byte characters, so a decoded sub-chunk could hold the wrong number of
coefficients or end inside a character. Same interface as ``ExactGrammar``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class TokenTypeState:
    subchunk: Tensor
    empty: Tensor
    finished: Tensor


class TokenTypeGrammar:
    def __init__(self, n_fast: int, n_subchunks: int, max_length: int) -> None:
        self.n_fast, self.n_subchunks, self.max_length = n_fast, n_subchunks, max_length
        self.split, self.eos = n_fast, n_fast + 1

    def start(self, batch_size: int) -> TokenTypeState:
        zeros = torch.zeros(batch_size, dtype=torch.bool)
        return TokenTypeState(torch.zeros(batch_size, dtype=torch.long), ~zeros, zeros)

    def legal(self, state: TokenTypeState) -> Tensor:
        mask = torch.zeros(state.finished.shape[0], self.n_fast + 2, dtype=torch.bool)
        mask[:, : self.n_fast] = ~state.finished[:, None]
        last = state.subchunk >= self.n_subchunks - 1
        mask[:, self.split] = ~state.finished & ~state.empty & ~last
        mask[:, self.eos] = state.finished | (~state.empty & last)
        return mask

    def advance(self, state: TokenTypeState, chosen: Tensor) -> TokenTypeState:
        is_split = chosen == self.split
        return TokenTypeState(state.subchunk + is_split.long(), is_split, state.finished | (chosen == self.eos))

    def done(self, state: TokenTypeState) -> Tensor:
        return state.finished
