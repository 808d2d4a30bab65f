"""Which FAST token may follow which, at the level of UTF-8 bytes and coefficient codes.

A FAST token is a run of UTF-8 bytes, and one coefficient (code ``k``, the character ``chr(k)``) takes one to three
bytes, so a token can end in the middle of a character and the next token must finish it. The automaton's state is
the pending, incomplete character (its bytes so far; state 0: none). For every state and token id it records
whether the token is legal there, how many characters (coefficients) it completes and the state it leaves behind.
A token is legal when the bytes form valid UTF-8 (no stray continuation byte, no overlong form, no surrogate),
every character it completes is a code inside the tokenizer's range ``[0, max_code]``, and the character it leaves
pending can still be completed inside that range.

The tokenizer's range guarantees that every code in it is encodable byte by byte (each of its bytes is a token), so
from any state some token always makes progress: a decoder that only picks legal tokens never gets stuck.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from lerobot_fastplus.fast.tokenizer import FastTokenizer

CONTINUATION = range(0x80, 0xC0)


def utf8_length(code: int) -> int:
    """Bytes of ``chr(code)`` in UTF-8."""
    return 1 if code < 0x80 else 2 if code < 0x800 else 3 if code < 0x10000 else 4


def _char_length(lead: int) -> int:
    """Length of the character a byte starts (0: the byte cannot start one)."""
    if lead < 0x80:
        return 1
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0


def _is_valid_prefix(prefix: bytes) -> bool:
    """An incomplete character that some continuation turns into valid UTF-8 (overlong forms excluded)."""
    try:
        return codecs.getincrementaldecoder("utf-8")("strict").decode(prefix, final=False) == ""
    except UnicodeDecodeError:
        return False


def _decode_char(char: bytes) -> int | None:
    """The code of one complete, valid UTF-8 character, or None."""
    try:
        return ord(char.decode("utf-8"))
    except UnicodeDecodeError:
        return None


@lru_cache(maxsize=4096)
def _smallest_completion(prefix: bytes) -> int | None:
    """The smallest code of a valid character that starts with the incomplete ``prefix``, or None.

    Codes grow with the continuation bytes in order, so the smallest byte that keeps the character valid wins."""
    if not _is_valid_prefix(prefix):
        return None
    length = _char_length(prefix[0])
    for byte in CONTINUATION:
        candidate = prefix + bytes([byte])
        if len(candidate) == length:
            if (code := _decode_char(candidate)) is not None:
                return code
        elif _is_valid_prefix(candidate):
            return _smallest_completion(candidate)
    return None


@dataclass(frozen=True)
class _TokenParts:
    """A token's bytes split as: continuation bytes that finish a pending character, complete characters, and the
    start of a character it leaves pending."""

    leading: bytes
    codes: tuple[int, ...]
    tail: bytes


def _split_token(token: bytes) -> _TokenParts | None:
    """The parts of a token, or None when its bytes can never be valid UTF-8."""
    start = 0
    while start < len(token) and token[start] in CONTINUATION:
        start += 1
    codes: list[int] = []
    pos = start
    while pos < len(token):
        length = _char_length(token[pos])
        if length == 0:
            return None
        if pos + length > len(token):
            tail = token[pos:]
            return _TokenParts(token[:start], tuple(codes), tail) if _is_valid_prefix(tail) else None
        code = _decode_char(token[pos : pos + length])
        if code is None:
            return None
        codes.append(code)
        pos += length
    return _TokenParts(token[:start], tuple(codes), b"")


@dataclass(frozen=True)
class TokenAutomaton:
    """Transition tables over ``n_states`` pending-character states (0: none) and the tokenizer's ids.

    ``legal[s, t]``: token ``t`` may follow state ``s``; ``completes[s, t]``: coefficients it completes;
    ``next_state[s, t]``: the state after it (0 where illegal). ``pending[s]`` is each state's pending bytes.
    """

    legal: np.ndarray
    completes: np.ndarray
    next_state: np.ndarray
    pending: tuple[bytes, ...]
    max_code: int

    @property
    def n_states(self) -> int:
        return len(self.pending)

    @property
    def max_bytes_per_code(self) -> int:
        """The most tokens one coefficient can take (one per byte)."""
        return utf8_length(self.max_code)

    @classmethod
    def build(cls, tokenizer: FastTokenizer) -> TokenAutomaton:
        max_code = tokenizer.max_code
        if max_code < 0:
            raise ValueError(f"{tokenizer!r} cannot encode any coefficient (its vocabulary lacks byte 0x00).")
        parts = [None if raw is None else _split_token(raw) for raw in tokenizer.token_bytes]

        def viable(prefix: bytes) -> bool:
            smallest = _smallest_completion(prefix)
            return smallest is not None and smallest <= max_code

        def in_range(codes: tuple[int, ...]) -> bool:
            return all(code <= max_code for code in codes)

        states: dict[bytes, int] = {b"": 0}
        rows: list[list[tuple[int, int] | None]] = []
        order = [b""]
        while len(rows) < len(order):
            prefix = order[len(rows)]
            missing = _char_length(prefix[0]) - len(prefix) if prefix else 0
            row: list[tuple[int, int] | None] = []
            for part in parts:
                row.append(None)
                if part is None:
                    continue
                completed = part.codes
                if prefix and len(part.leading) < missing:
                    if completed or part.tail:
                        continue
                    tail = prefix + part.leading
                    if not viable(tail):
                        continue
                else:
                    if len(part.leading) != missing:
                        continue
                    if prefix:
                        code = _decode_char(prefix + part.leading)
                        if code is None:
                            continue
                        completed = (code, *completed)
                    tail = part.tail
                    if not in_range(completed) or (tail and not viable(tail)):
                        continue
                if tail not in states:
                    states[tail] = len(order)
                    order.append(tail)
                row[-1] = (len(completed), states[tail])
            rows.append(row)

        n_states, n_ids = len(order), len(parts)
        legal = np.zeros((n_states, n_ids), dtype=bool)
        completes = np.zeros((n_states, n_ids), dtype=np.int32)
        next_state = np.zeros((n_states, n_ids), dtype=np.int32)
        for s, row in enumerate(rows):
            for t, entry in enumerate(row):
                if entry is not None:
                    legal[s, t] = True
                    completes[s, t], next_state[s, t] = entry
        return cls(legal, completes, next_state, tuple(order), max_code)
