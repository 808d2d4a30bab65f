"""Autoregressive FAST decoding shared by pi0_fast and pi05_ki's FAST head: the exact grammar on the decode
device, the constrained decoding loop, a KV-cached step through PaliGemma's language model, and the rule that
fills steps a decode did not yield.

The grammar (``lerobot_fastplus.fast.layout_grammar``) admits only sequences that decode completely with every
coefficient inside the tokenizer's range, and its length bound is reached only by the longest such sequence, so a
decode that runs for ``max_length`` steps has finished every row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from lerobot.policies.common.vla_utils import prepare_attention_masks_4d
from torch import Tensor, nn
from transformers.models.gemma.modeling_gemma import apply_rotary_pos_emb

from lerobot_fastplus.fast.layout_grammar import LayoutGrammar
from lerobot_fastplus.fast.split_layout import ParsedActions, SplitLayout

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GrammarState:
    """Per batch row: the grammar table row (sub-chunk and pending UTF-8 state, or full, or done) and the number of
    coefficients still missing from the current sub-chunk."""

    row: Tensor
    missing: Tensor


class ExactGrammar:
    """A :class:`LayoutGrammar`'s tables on one device; legality and state updates are table lookups."""

    def __init__(self, tables: LayoutGrammar, device: torch.device | str) -> None:
        self.tables = tables
        self.need = torch.as_tensor(tables.need, device=device)
        self.delta = torch.as_tensor(tables.delta.reshape(-1), device=device)
        self.next_row = torch.as_tensor(tables.next_row.reshape(-1), device=device)
        self.next_row_full = torch.as_tensor(tables.next_row_full.reshape(-1), device=device)
        self.n_candidates = tables.n_candidates

    @property
    def max_length(self) -> int:
        return self.tables.max_length

    @property
    def device(self) -> torch.device:
        return self.need.device

    def to(self, device: torch.device | str) -> ExactGrammar:
        """These tables on ``device`` (``self`` when they are there already)."""
        return self if torch.device(device) == self.device else ExactGrammar(self.tables, device)

    def start(self, batch_size: int) -> GrammarState:
        device = self.need.device
        row = torch.full((batch_size,), self.tables.start_row, dtype=torch.long, device=device)
        missing = torch.full((batch_size,), self.tables.start_missing, dtype=self.need.dtype, device=device)
        return GrammarState(row, missing)

    def legal(self, state: GrammarState) -> Tensor:
        """Bool ``[B, n_candidates]``: which candidates may come next (only EOS once a row is done)."""
        return self.need.index_select(0, state.row) <= state.missing[:, None]

    def advance(self, state: GrammarState, chosen: Tensor) -> GrammarState:
        """State after each row emitted candidate ``chosen`` (``[B]``, legal)."""
        flat = state.row * self.n_candidates + chosen
        missing = state.missing - self.delta.take(flat)
        row = torch.where(missing == 0, self.next_row_full.take(flat), self.next_row.take(flat))
        return GrammarState(row, missing)

    def done(self, state: GrammarState) -> Tensor:
        return state.row == self.tables.done_row

    def follow(self, state: GrammarState, forced: Tensor) -> GrammarState:
        """State after each row took its forced candidates (``[B, P]``, left-padded with -1): teacher forcing, so
        nothing is chosen, but every forced candidate must be legal."""
        for column in forced.to(self.device).T:
            real = column >= 0
            chosen = column.clamp(min=0)
            legal = self.legal(state).gather(1, chosen[:, None])[:, 0]
            if not bool((legal | ~real).all()):
                raise ValueError(
                    "a forced prefix is not a legal token sequence under the exact grammar (it must be whole "
                    "sub-chunks of this FAST tokenizer, each closed by SPLIT); re-encode them with the policy's one."
                )
            after = self.advance(state, chosen)
            row, missing = torch.where(real, after.row, state.row), torch.where(real, after.missing, state.missing)
            state = GrammarState(row, missing)
        return state


def choose(logits: Tensor, legal: Tensor, temperature: float, generator: torch.Generator | None = None) -> Tensor:
    """Pick one legal candidate per row: argmax when ``temperature == 0``, else sample ``softmax(logits / T)``."""
    masked = logits.float().masked_fill(~legal, float("-inf"))
    if temperature == 0:
        return masked.argmax(dim=-1)
    probs = torch.softmax(masked / temperature, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def decode_constrained(
    hidden: Tensor,
    step: Callable[[Tensor], Tensor],
    weight: Tensor,
    grammar: ExactGrammar,
    *,
    max_steps: int | None = None,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    state: GrammarState | None = None,
) -> Tensor:
    """Candidate indices ``[B, <= max_steps]`` (FAST ids, SPLIT, EOS; EOS-padded once a row is done).

    ``hidden`` ``[B, width]`` predicts the first token, ``weight`` ``[n_candidates, width]`` scores the candidates
    (only the ids that can come next: a slice of the output layer), and ``step(chosen)`` feeds the chosen candidates
    and returns the hidden states that predict the next ones. Stops when every row is done, at the latest after the
    grammar's bound (or ``max_steps``). ``state``: where the grammar stands after a forced prefix (``follow``);
    by default the start."""
    limit = grammar.max_length if max_steps is None else max_steps
    state = grammar.start(hidden.shape[0]) if state is None else state
    generated: list[Tensor] = []
    for _ in range(limit):
        chosen = choose(hidden.float() @ weight.T, grammar.legal(state), temperature, generator)
        generated.append(chosen)
        state = grammar.advance(state, chosen)
        if bool(grammar.done(state).all()) or len(generated) == limit:
            break
        hidden = step(chosen)
    return torch.stack(generated, dim=1)


def cached_language_model_step(
    language_model: nn.Module, emb: Tensor, key_pad: Tensor, keys: list[Tensor], values: list[Tensor]
) -> Tensor:
    """One decoding step ``[B, 1, width] -> [B, width]`` through a PaliGemma language model against the KV cache
    ``keys`` / ``values`` (one tensor per layer, extended in place; ``key_pad`` covers the cache plus this token).

    It uses the layers' own modules but none of the generic per-call machinery (mask building, cache objects), so
    a step costs about half as much as a ``forward`` with a cache."""
    position = key_pad.sum(dim=1, keepdim=True) - 1
    cos, sin = language_model.rotary_emb(emb, position)
    mask = prepare_attention_masks_4d(key_pad[:, None, :], dtype=emb.dtype)
    hidden = emb
    for i, layer in enumerate(language_model.layers):
        attn = layer.self_attn
        x, _ = layer.input_layernorm(hidden)
        shape = (*x.shape[:-1], -1, attn.head_dim)
        query = attn.q_proj(x).view(shape).transpose(1, 2)
        key = attn.k_proj(x).view(shape).transpose(1, 2)
        query, key = apply_rotary_pos_emb(query, key, cos, sin)
        keys[i] = torch.cat([keys[i], key], dim=2)
        values[i] = torch.cat([values[i], attn.v_proj(x).view(shape).transpose(1, 2)], dim=2)
        out = F.scaled_dot_product_attention(
            query, keys[i], values[i], attn_mask=mask, scale=attn.scaling, enable_gqa=True
        )
        hidden = hidden + attn.o_proj(out.transpose(1, 2).reshape(*x.shape[:-1], -1))
        x, _ = layer.post_attention_layernorm(hidden)
        hidden = hidden + layer.mlp(x)
    return language_model.norm(hidden)[0][:, -1]


def resolve_decoding_limit(requested: int | None, grammar: LayoutGrammar, flag: str) -> int:
    """The step limit of a decode: the grammar's bound by default; a smaller ``requested`` value is refused, since
    a decode stopped before the bound could leave a sub-chunk incomplete."""
    if requested is None:
        return grammar.max_length
    if requested < grammar.max_length:
        raise ValueError(
            f"{flag}={requested} is below {grammar.max_length}, the longest token sequence the action layout allows "
            "for this FAST tokenizer and action dimension (every coefficient of every sub-chunk emitted byte by "
            "byte, plus the separators): a decode stopped earlier could end with an incomplete chunk. Leave it "
            f"unset (it then defaults to that bound) or set it to at least {grammar.max_length}."
        )
    return requested


def build_decoding_grammar(
    layout: SplitLayout, action_dim: int, requested: int | None, device: torch.device | str
) -> tuple[ExactGrammar, int]:
    """The exact grammar of ``layout`` on ``device`` and the decode's step limit (``--policy.max_decoding_steps``,
    ``requested``; by default the grammar's bound)."""
    tables = LayoutGrammar.build(layout, action_dim)
    return ExactGrammar(tables, device), resolve_decoding_limit(requested, tables, "--policy.max_decoding_steps")


@dataclass(frozen=True)
class DecodeReport:
    """What the last autoregressive ``predict_action_chunk`` decoded, per batch row."""

    tokens: np.ndarray  # layout ids after BOS (forced ones first), EOS-padded
    parsed: ParsedActions  # what the split layout recovered from them
    held_origin: np.ndarray  # nothing decoded and no earlier action: the row holds the normalised origin
    lengths: np.ndarray  # tokens per row after BOS (forced ones included), up to and including the first EOS
    forced: np.ndarray | None = None  # per row, tokens forced before decoding (prefix conditioning); None: none
    forced_steps: int = 0  # chunk steps the forced tokens encode

    @property
    def generated(self) -> np.ndarray:
        """Tokens the decoder generated per row (forced ones are not generated)."""
        return self.lengths if self.forced is None else self.lengths - self.forced

    @property
    def missing_steps(self) -> np.ndarray:
        return self.parsed.missing_steps

    @property
    def reasons(self) -> list[list[str]]:
        return self.parsed.reasons

    @property
    def n_incomplete(self) -> int:
        return int((self.missing_steps > 0).sum())


def actions_from_candidates(
    layout: SplitLayout, candidates: Tensor, action_dim: int, previous: np.ndarray | None, policy_name: str
) -> tuple[np.ndarray, DecodeReport]:
    """Normalised chunks ``[B, chunk_size, action_dim]`` from decoded candidate indices, and the report.

    Steps a decode did not yield (the exact grammar rules them out; this guards every other path) hold the nearest
    decoded step of the chunk, or the previous action (``previous``) when nothing was decoded; every such chunk is
    logged as a warning, never passed off as decoded."""
    local = candidates.cpu().numpy()
    local = np.where(local < layout.n_fast_ids, local, local + 1)  # candidate index -> layout id (skip BOS)
    parsed = layout.parse(local, action_dim=action_dim)
    actions, held_origin = fill_undecoded_chunks(parsed.actions.copy(), parsed.step_valid, previous)
    is_eos = local == layout.eos_id
    lengths = np.where(is_eos.any(axis=1), is_eos.argmax(axis=1) + 1, local.shape[1])
    report = DecodeReport(local, parsed, held_origin, lengths)
    if report.n_incomplete:
        logger.warning(
            "%s: %d of %d chunks decoded incompletely (missing steps per chunk: %s; %d held the normalised origin for "
            "lack of any decoded step or earlier action); first reason: %s",
            policy_name,
            report.n_incomplete,
            len(local),
            report.missing_steps.tolist(),
            int(held_origin.sum()),
            next((r[0] for r in report.reasons if r), "undecodable tokens"),
        )
    return actions, report


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
