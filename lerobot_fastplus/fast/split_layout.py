"""BOS / SPLIT / EOS layout: one action chunk as independently FAST-encoded sub-chunks.

A chunk of ``chunk_size`` steps is cut into sub-chunks of ``split_every`` steps (the last one may be
shorter) and the sequence reads ``BOS, tokens(sub 1), SPLIT, tokens(sub 2), ..., EOS``; EOS also
pads a batch. Because every sub-chunk has a known shape, one bad token spoils one sub-chunk only and
a sequence cut short still yields its complete sub-chunks.

Ids here are local to the layout: FAST ids ``0 .. n_fast_ids - 1``, then BOS, SPLIT, EOS. A policy
maps them into its own vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lerobot_fastplus.fast.tokenizer import FastTokenizer, _as_chunk_batch


@dataclass(frozen=True)
class LayoutBatch:
    """Padded token sequences of a batch of chunks.

    ``valid`` marks real tokens (BOS through the first EOS); ``target`` marks the tokens a model
    must predict: every valid token but BOS, minus the tokens (and closing separator) of sub-chunks
    that consist only of padded steps. ``dropped`` counts, per chunk, the trailing sub-chunks left out
    because the sequence would have been longer than ``max_length``.
    """

    ids: np.ndarray
    valid: np.ndarray
    target: np.ndarray
    lengths: np.ndarray
    dropped: np.ndarray


@dataclass(frozen=True)
class ParsedActions:
    """Actions recovered from generated ids.

    ``actions`` is ``[B, chunk_size, D]`` and finite. Steps of sub-chunks that were missing or did
    not decode are filled by holding the nearest recovered step (the previous one; the next one for
    a leading gap; zeros when nothing was recovered) and flagged False in ``step_valid``.
    """

    actions: np.ndarray
    step_valid: np.ndarray
    subchunk_valid: np.ndarray
    ended: np.ndarray
    reasons: list[list[str]]

    @property
    def missing_steps(self) -> np.ndarray:
        return (~self.step_valid).sum(axis=1)

    @property
    def n_failed(self) -> int:
        """Number of sequences with at least one missing step."""
        return int((self.missing_steps > 0).sum())


class SplitLayout:
    def __init__(self, tokenizer: FastTokenizer, chunk_size: int, split_every: int = 10) -> None:
        if chunk_size <= 0 or split_every <= 0:
            raise ValueError(f"chunk_size ({chunk_size}) and split_every ({split_every}) must be positive integers.")
        if split_every > chunk_size:
            raise ValueError(
                f"split_every ({split_every}) is larger than chunk_size ({chunk_size}); set split_every to at "
                "most chunk_size (e.g. the tokenizer's time horizon)."
            )
        self.tokenizer = tokenizer
        self.chunk_size = chunk_size
        self.split_every = split_every
        self.n_fast_ids = tokenizer.num_ids
        self.bos_id = self.n_fast_ids
        self.split_id = self.n_fast_ids + 1
        self.eos_id = self.n_fast_ids + 2
        self.num_ids = self.n_fast_ids + 3
        self.bounds = [(s, min(s + split_every, chunk_size)) for s in range(0, chunk_size, split_every)]

    @property
    def n_subchunks(self) -> int:
        return len(self.bounds)

    def __repr__(self) -> str:
        return f"SplitLayout(chunk_size={self.chunk_size}, split_every={self.split_every}, {self.tokenizer!r})"

    # ------------------------------------------------------------------ build
    def encode_subchunks(self, actions: np.ndarray, *, clip: bool = False) -> list[list[list[int]]]:
        """FAST ids of every sub-chunk: ``result[b][j]`` for chunk ``b``, sub-chunk ``j``."""
        arr = _as_chunk_batch(actions, "actions")
        if arr.shape[1] != self.chunk_size:
            raise ValueError(
                f"actions have {arr.shape[1]} steps but the layout expects chunk_size={self.chunk_size}; "
                "make the policy's chunk_size match the data's action horizon."
            )
        per_sub = [self.tokenizer.encode(arr[:, s:e], clip=clip) for s, e in self.bounds]
        return [[per_sub[j][b] for j in range(self.n_subchunks)] for b in range(arr.shape[0])]

    def out_of_range(self, actions: np.ndarray) -> np.ndarray:
        """Per chunk, how many sub-chunk coefficients the vocabulary cannot encode (``build`` would clip)."""
        arr = _as_chunk_batch(actions, "actions")
        return sum(self.tokenizer.out_of_range(arr[:, s:e]) for s, e in self.bounds)

    def build(
        self,
        actions: np.ndarray,
        *,
        step_is_pad: np.ndarray | None = None,
        clip: bool = False,
        max_length: int | None = None,
        pad_to: int | None = None,
    ) -> LayoutBatch:
        """Token sequences for a batch of chunks ``[B, chunk_size, D]``, padded with EOS.

        ``step_is_pad`` (``[B, chunk_size]``, LeRobot's ``action_is_pad``) removes fully padded
        sub-chunks from the targets. A sequence that would be longer than ``max_length`` keeps the
        sub-chunks that fit and drops the rest (counted in ``dropped``; its last token is then a SPLIT,
        not EOS), so one long chunk never stops a training run; ``pad_to`` fixes the padded length (at
        least the longest sequence).
        """
        subs = self.encode_subchunks(actions, clip=clip)
        batch = len(subs)
        sub_is_pad = np.zeros((batch, self.n_subchunks), dtype=bool)
        if step_is_pad is not None:
            pad = np.asarray(step_is_pad, dtype=bool).reshape(batch, self.chunk_size)
            sub_is_pad = np.stack([pad[:, s:e].all(axis=1) for s, e in self.bounds], axis=1)

        sequences: list[list[int]] = []
        targets: list[list[bool]] = []
        dropped = np.zeros(batch, dtype=np.int64)
        for b, chunk_subs in enumerate(subs):
            seq, tgt = [self.bos_id], [False]
            for j, tokens in enumerate(chunk_subs):
                closing = self.split_id if j < self.n_subchunks - 1 else self.eos_id
                if max_length is not None and len(seq) + len(tokens) + 1 > max_length:
                    dropped[b] = self.n_subchunks - j
                    break
                seq += [*tokens, closing]
                tgt += [not sub_is_pad[b, j]] * (len(tokens) + 1)
            sequences.append(seq)
            targets.append(tgt)

        lengths = np.array([len(s) for s in sequences], dtype=np.int64)
        width = max(int(lengths.max(initial=0)), pad_to or 0)
        ids = np.full((batch, width), self.eos_id, dtype=np.int64)
        valid = np.zeros((batch, width), dtype=bool)
        target = np.zeros((batch, width), dtype=bool)
        for b, (seq, tgt) in enumerate(zip(sequences, targets, strict=True)):
            ids[b, : len(seq)] = seq
            valid[b, : len(seq)] = True
            target[b, : len(tgt)] = tgt
        return LayoutBatch(ids=ids, valid=valid, target=target, lengths=lengths, dropped=dropped)

    def lengths(self, actions: np.ndarray, *, clip: bool = False) -> np.ndarray:
        """Full sequence length of every chunk (BOS to EOS), with no sub-chunk dropped."""
        return np.array([1 + sum(len(t) + 1 for t in subs) for subs in self.encode_subchunks(actions, clip=clip)])

    # ------------------------------------------------------------------ parse
    def _segments(self, seq: Sequence[int]) -> tuple[list[list[int]], bool, list[str]]:
        tokens = [int(t) for t in np.asarray(seq).reshape(-1)]
        if tokens and tokens[0] == self.bos_id:
            tokens = tokens[1:]
        segments: list[list[int]] = [[]]
        ended = False
        for token in tokens:
            if token == self.eos_id:
                ended = True
                break
            if token == self.split_id:
                segments.append([])
            else:
                segments[-1].append(token)
        reasons = []
        if len(segments) > self.n_subchunks:
            reasons.append(f"{len(segments) - self.n_subchunks} extra sub-chunk(s) ignored")
            segments = segments[: self.n_subchunks]
        if not ended:
            reasons.append("no EOS: sequence cut short")
        if segments and not segments[-1]:
            segments.pop()  # a trailing separator opens no sub-chunk
        return segments, ended, reasons

    def parse(self, ids: Sequence[Sequence[int]] | np.ndarray, *, action_dim: int | None = None) -> ParsedActions:
        """Recover action chunks from generated ids (with or without the leading BOS)."""
        dim = action_dim or self.tokenizer.action_dim
        if not dim:
            raise ValueError("parse needs action_dim= (the tokenizer does not record it).")
        batch = len(ids)
        actions = np.zeros((batch, self.chunk_size, dim), dtype=np.float64)
        sub_ok = np.zeros((batch, self.n_subchunks), dtype=bool)
        ended = np.zeros(batch, dtype=bool)
        reasons: list[list[str]] = []

        # Group segments by sub-chunk index so each group decodes in one batched call.
        groups: list[list[tuple[int, list[int]]]] = [[] for _ in range(self.n_subchunks)]
        for b, seq in enumerate(ids):
            segments, ended[b], why = self._segments(seq)
            reasons.append(why)
            if len(segments) < self.n_subchunks:
                why.append(f"{self.n_subchunks - len(segments)} of {self.n_subchunks} sub-chunk(s) missing")
            for j, segment in enumerate(segments):
                groups[j].append((b, segment))
        for j, group in enumerate(groups):
            if not group:
                continue
            start, stop = self.bounds[j]
            result = self.tokenizer.decode([seg for _, seg in group], time_horizon=stop - start, action_dim=dim)
            rows = [b for b, _ in group]
            actions[rows, start:stop] = result.actions
            sub_ok[rows, j] = result.valid
            for b, ok, reason in zip(rows, result.valid, result.reasons, strict=True):
                if not ok:
                    reasons[b].append(f"sub-chunk {j + 1}: {reason}")

        step_valid = np.zeros((batch, self.chunk_size), dtype=bool)
        for j, (start, stop) in enumerate(self.bounds):
            step_valid[:, start:stop] = sub_ok[:, j : j + 1]
        _hold_nearest_valid(actions, step_valid)
        return ParsedActions(actions, step_valid, sub_ok, ended, reasons)


def _hold_nearest_valid(actions: np.ndarray, step_valid: np.ndarray) -> None:
    """Fill invalid steps in place with the previous valid step (the next one for a leading gap)."""
    steps = np.arange(step_valid.shape[1])
    for b in np.flatnonzero(~step_valid.all(axis=1)):
        good = step_valid[b]
        if not good.any():
            actions[b] = 0.0
            continue
        prev = np.maximum.accumulate(np.where(good, steps, -1))
        source = np.where(prev >= 0, prev, np.argmax(good))
        actions[b] = actions[b, source]
