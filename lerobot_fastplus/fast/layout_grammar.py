"""Exact grammar of the split layout: tables from which a decoder can only generate decodable sequences.

Candidates are what an autoregressive decoder scores after BOS: the tokenizer's ids ``0 .. n - 1``, then SPLIT
(``n``), then EOS (``n + 1``). A row's position is kept as two integers: a table row (which sub-chunk it is in,
counted as ``k`` sub-chunks still to come after the current one, and the pending UTF-8 state of the
:class:`TokenAutomaton`; or "sub-chunk full"; or "done") and the number of coefficients still missing from the
current sub-chunk. Then

* a FAST id is legal when the automaton allows it and it leaves the sub-chunk completable: the coefficients it
  completes, plus one if it leaves a character pending, are at most the number still missing;
* SPLIT / EOS are legal exactly when the sub-chunk holds all its ``steps x action_dim`` coefficients with nothing
  pending (SPLIT before the last sub-chunk, EOS after it); after EOS only EOS follows (padding).

So every sequence the decoder can produce decodes completely, with every coefficient inside the tokenizer's range.
Everything is a table lookup: legality is ``need[row] <= missing`` and a step is three gathers, so a decoder can run
it vectorised on its own device. Core pi0_fast's layout (one FAST chunk closed by one token) is one sub-chunk, and a
ragged last sub-chunk only changes how many coefficients it expects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lerobot_fastplus.fast.split_layout import SplitLayout
from lerobot_fastplus.fast.token_automaton import TokenAutomaton

# Larger than any count of coefficients: "never legal" (BLOCKED) and "always legal" (-BLOCKED) in ``need``.
BLOCKED = 2**30


@dataclass(frozen=True)
class LayoutGrammar:
    """Tables of the exact grammar (candidate columns: FAST ids, SPLIT, EOS).

    ``need[row, c]``: candidate ``c`` is legal in ``row`` when ``need[row, c] <= missing``; after choosing it,
    ``missing -= delta[row, c]`` and the row becomes ``next_row_full[row, c]`` if ``missing`` reached 0, else
    ``next_row[row, c]``. ``max_length`` bounds the generated sequence (after BOS, EOS included): every row is done
    after that many steps.
    """

    need: np.ndarray
    delta: np.ndarray
    next_row: np.ndarray
    next_row_full: np.ndarray
    start_row: int
    start_missing: int
    done_row: int
    max_length: int

    @property
    def n_candidates(self) -> int:
        return self.need.shape[1]

    @classmethod
    def build(cls, layout: SplitLayout, action_dim: int, automaton: TokenAutomaton | None = None) -> LayoutGrammar:
        automaton = automaton or TokenAutomaton.build(layout.tokenizer)
        n_states, n_fast = automaton.legal.shape
        n_sub = layout.n_subchunks
        split, eos = n_fast, n_fast + 1
        # sizes[k]: coefficients of the sub-chunk that has k sub-chunks after it (k = 0: the last, maybe ragged)
        sizes = [(stop - start) * action_dim for start, stop in reversed(layout.bounds)]
        full = [n_sub * n_states + k for k in range(n_sub)]
        done = n_sub * n_states + n_sub
        n_rows = done + 1

        need = np.full((n_rows, n_fast + 2), BLOCKED, dtype=np.int32)
        delta = np.zeros_like(need)
        next_row = np.full(need.shape, done, dtype=np.int64)
        next_row_full = next_row.copy()
        fast_need = np.where(automaton.legal, automaton.completes + (automaton.next_state != 0), BLOCKED).astype(
            np.int32
        )
        for k in range(n_sub):
            rows = slice(k * n_states, (k + 1) * n_states)
            need[rows, :n_fast] = fast_need
            delta[rows, :n_fast] = automaton.completes
            next_row[rows, :n_fast] = k * n_states + automaton.next_state
            next_row_full[rows, :n_fast] = full[k]
            if k > 0:  # close this sub-chunk with SPLIT and open the next one
                need[full[k], split] = -BLOCKED
                delta[full[k], split] = -sizes[k - 1]
                next_row[full[k], split] = next_row_full[full[k], split] = (k - 1) * n_states
        need[full[0], eos] = need[done, eos] = -BLOCKED
        max_length = sum(size * automaton.max_bytes_per_code + 1 for size in sizes)
        return cls(need, delta, next_row, next_row_full, (n_sub - 1) * n_states, sizes[-1], done, max_length)
