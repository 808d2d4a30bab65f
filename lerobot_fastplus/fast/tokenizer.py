"""FAST action tokenizer: a transform along time (FAST's DCT by default), scale and round, byte-level BPE.

Compatible with the published FAST / FAST+ tokenizer directories (``processor_config.json`` +
``tokenizer.json`` + ``tokenizer_config.json``): the same files give the same token ids and the
same decoded actions as Physical Intelligence's ``UniversalActionProcessor``. Differences, all on
purpose:

* batch-first and stateless: chunk shapes are arguments or tokenizer attributes, never remembered
  from an earlier call, so one instance can serve several threads;
* decoding never raises on token content and never returns silent garbage: each sequence gets a
  validity flag and a reason, invalid ones decode to zeros;
* inputs that the vocabulary cannot represent raise (or are clipped, when asked) instead of being
  clipped or dropped silently;
* ``fit`` also puts the 256 byte-level symbols in the initial alphabet, so every coefficient
  inside the fitted range stays encodable even when it never occurred in the training chunks;
* every tokenizer has an explicit coefficient range: the quantised codes it was fitted on
  (``max_token``, recorded in ``processor_config.json`` as an extra key the reference ignores), plus an
  optional ``range_margin``. ``encode`` refuses codes outside it (or clips them), and ``decode`` only calls a
  sequence valid when all its codes lie inside, so a valid decode re-encodes to the same codes.

The transform along time is a setting (``transform``, see :mod:`lerobot_fastplus.fast.transforms`). ``dct``, the
default, is FAST's: everything above holds and the files are unchanged. An orthogonal wavelet or ``none`` is
recorded as a ``transform`` key in ``processor_config.json``; the reference ignores that key (it would decode such
tokens with its inverse DCT), so only this package reads those files, and the ``AutoProcessor`` module saved with
them refuses them.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import ByteLevelBPETokenizer, Tokenizer, pre_tokenizers
from tokenizers.trainers import BpeTrainer

from lerobot_fastplus.fast import transforms

PROCESSOR_CONFIG = "processor_config.json"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
# module.class of the AutoProcessor that save() ships with every tokenizer (a file of this package)
AUTO_PROCESSOR = "processing_fastplus.FastActionProcessor"

MIN_FIT_CHUNKS = 8
# Code points from here on are UTF-16 surrogates: they have no UTF-8 form, so no token can carry them.
_SURROGATE_START = 0xD800
_INT64 = np.iinfo(np.int64)


@dataclass(frozen=True)
class DecodeResult:
    """Decoded action chunks with a per-sequence verdict.

    ``actions`` is ``[B, T, D]`` and always finite; rows whose ``valid`` flag is False are zeros and
    ``reasons[i]`` says why (otherwise it is ``None``).
    """

    actions: np.ndarray
    valid: np.ndarray
    reasons: list[str | None] = field(default_factory=list)

    @property
    def n_invalid(self) -> int:
        return int((~self.valid).sum())


def _as_chunk_batch(actions: Any, what: str, *, allow_single: bool = True) -> np.ndarray:
    """``actions`` as a float64 ``[B, T, D]`` array (``B`` may be 0); raises naming the fix on anything else."""
    arr = np.asarray(actions, dtype=np.float64)
    if arr.ndim == 2 and allow_single:
        arr = arr[None]
    if arr.ndim != 3:
        single = " (or [time, action_dim] for one chunk)" if allow_single else ""
        raise ValueError(
            f"{what} must have shape [batch, time, action_dim]{single}; "
            f"got an array of shape {arr.shape}. Stack chunks of equal length into one array."
        )
    if arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ValueError(f"{what} has an empty time or action dimension (shape {arr.shape}).")
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(
            f"{what} contains NaN or inf (first at batch {bad[0]}, step {bad[1]}, dim {bad[2]}). "
            "Drop or repair those frames (and check the normalisation statistics for zero ranges) "
            "before tokenizing."
        )
    return arr


def _id_sequence(seq: Any) -> list[int] | str:
    """One sequence of token ids as a list of Python ints, or the reason it is not one."""
    if isinstance(seq, np.ndarray | Sequence) and not isinstance(seq, str | bytes):
        if isinstance(seq, np.ndarray) and seq.ndim != 1:
            return f"expected a flat sequence of token ids, got an array of shape {seq.shape}"
        items = seq.tolist() if isinstance(seq, np.ndarray) else list(seq)
        if set(map(type, items)) <= {int}:  # the usual case, checked without a Python step per id
            return items
        for item in items:
            if isinstance(item, bool) or not isinstance(item, int | np.integer):
                return f"token ids must be integers, got {type(item).__name__} {item!r:.40}"
        return [int(item) for item in items]
    if hasattr(seq, "tolist") and getattr(seq, "ndim", None) == 1:  # e.g. a torch tensor
        return _id_sequence(seq.tolist())
    return (
        f"expected a sequence of token ids per chunk, got {type(seq).__name__} {seq!r:.40} "
        "(pass a list of id lists, one per chunk)"
    )


def _id_rows(ids: Any) -> list[Any]:
    """The rows of a batch of id sequences (a list of lists, a 2-D array or tensor); anything that is not such a
    batch becomes a single row, which then decodes as invalid with a reason."""
    if isinstance(ids, np.ndarray):
        return list(ids) if ids.ndim else [ids]
    if isinstance(ids, Sequence) and not isinstance(ids, str | bytes):
        return list(ids)
    if hasattr(ids, "tolist"):  # e.g. a torch tensor
        return _id_rows(ids.tolist())
    return [ids]


def _integer_matrix(ids: Any) -> np.ndarray | None:
    """``ids`` as a 2-D integer numpy array when it is a plain numpy array or torch tensor of that kind, else None.

    Every row of such a batch is a sequence of integers, so it needs none of :func:`_id_sequence`'s checks.
    Subclasses of ``np.ndarray`` (``np.matrix``, masked arrays) take the general path, which splits them into rows
    differently.
    """
    torch = sys.modules.get("torch")  # a tensor implies torch is loaded; this module never imports it
    if torch is not None and isinstance(ids, torch.Tensor):
        if ids.ndim != 2 or ids.dtype not in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64):
            return None
        ids = ids.detach().cpu().numpy()
    if type(ids) is np.ndarray and ids.ndim == 2 and ids.dtype.kind in "iu":
        return ids
    return None


def _flat_ids(ids: Any) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """A batch of id sequences as one int64 array of all its ids, the number of ids of each row, and for each row
    the reason it is not a sequence of integers (None when it is; such rows add no ids).

    Ids that int64 cannot hold become -1: out of range for any vocabulary, like the ids themselves.
    """
    matrix = _integer_matrix(ids)
    if matrix is not None:
        n, length = matrix.shape
        # uint64 ids from 2**63 on wrap around to negative ones
        return matrix.reshape(-1).astype(np.int64), np.full(n, length, dtype=np.int64), [None] * n
    sequences = [row if type(row) is list else _id_sequence(row) for row in _id_rows(ids)]
    flat = list(chain.from_iterable(seq for seq in sequences if type(seq) is list))
    if not set(map(type, flat)) <= {int}:  # some list row holds other values: check the lists one by one
        sequences = [_id_sequence(seq) if type(seq) is list else seq for seq in sequences]
        flat = list(chain.from_iterable(seq for seq in sequences if type(seq) is list))
    try:
        values = np.fromiter(flat, dtype=np.int64, count=len(flat))
    except OverflowError:
        values = np.fromiter(
            (t if _INT64.min <= t <= _INT64.max else -1 for t in flat), dtype=np.int64, count=len(flat)
        )
    lengths = np.array([len(seq) if type(seq) is list else 0 for seq in sequences], dtype=np.int64)
    return values, lengths, [seq if type(seq) is str else None for seq in sequences]


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _utf8_rows(data: bytes, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode the rows ``data[ends[i - 1]:ends[i]]`` as UTF-8, each on its own.

    Returns the code points of the rows, concatenated; each row's number of code points; and whether each row is
    valid UTF-8 by itself. One decode of the whole buffer stands in for one per row: when the buffer is valid, a row
    is valid exactly when no character straddles one of its ends, and its code points are those whose first byte it
    holds. Otherwise the rows are checked one by one and the invalid ones contribute no code points.
    """
    starts = np.concatenate(([0], ends[:-1]))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        ok = np.array([_is_utf8(data[s:e]) for s, e in zip(starts.tolist(), ends.tolist(), strict=True)], dtype=bool)
        counts = np.zeros(len(ends), dtype=np.int32)
        if not ok.any():
            return np.zeros(0, dtype="<u4"), counts, ok
        kept = b"".join(data[s:e] for s, e in zip(starts[ok].tolist(), ends[ok].tolist(), strict=True))
        codes, counts[ok], _ = _utf8_rows(kept, np.cumsum(ends[ok] - starts[ok]))
        return codes, counts, ok
    continuation = np.append((np.frombuffer(data, dtype=np.uint8) & 0xC0) == 0x80, False)  # one past the end too
    leads = ~continuation
    leads[-1] = False
    counts = np.add.reduceat(leads, starts, dtype=np.int32)
    empty = starts == ends
    counts[empty] = 0  # reduceat gives a row with no bytes the next entry instead
    ok = ~(continuation[starts] | continuation[ends]) | empty
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4"), counts, ok


def _codes_to_strings(codes: np.ndarray) -> list[str]:
    """Rows of non-negative integer codes -> one string per row, character ``chr(code)`` each."""
    n, length = codes.shape
    if n == 0:
        return []
    text = np.ascontiguousarray(codes, dtype="<u4").tobytes().decode("utf-32-le")
    return [text[i * length : (i + 1) * length] for i in range(n)]


def _byte_level_symbols() -> set[str]:
    return set(pre_tokenizers.ByteLevel.alphabet())


def _token_bytes_table(bpe: Tokenizer) -> list[bytes | None]:
    """UTF-8 bytes of every token id (None for ids that are not byte-level tokens).

    The byte-level pre-tokenizer shows byte b as chr(b) when that is printable and otherwise as the
    next unused character from 256 on, in byte order; ``ByteLevel.alphabet()`` lists those 256
    characters, which fixes the mapping. Joining these bytes decodes a whole batch several times
    faster than ``Tokenizer.decode_batch`` while giving the same text.
    """
    alphabet = set(pre_tokenizers.ByteLevel.alphabet())
    stand_ins = iter(sorted(c for c in alphabet if ord(c) >= 256))
    char_to_byte = {}
    for b in range(256):
        char_to_byte[chr(b) if chr(b) in alphabet else next(stand_ins)] = b
    table: list[bytes | None] = []
    for token_id in range(bpe.get_vocab_size(with_added_tokens=True)):
        token = bpe.id_to_token(token_id)
        if token is None or any(c not in char_to_byte for c in token):
            table.append(None)
        else:
            table.append(bytes(char_to_byte[c] for c in token))
    return table


def _alphabet_span(bpe: Tokenizer) -> int | None:
    """Largest K such that the single characters chr(0) .. chr(K) are all in the vocabulary, or None.

    Both this project's and the reference's ``fit`` put every character of the fitted code range into the
    initial alphabet, so for files that do not record ``max_token`` (the published FAST+, reference-fitted
    files) this run recovers the fitted range. It can run a little past it when the next characters happen to
    be byte-level symbols (code points 33..323), which only small ranges have.
    """
    singles = {ord(token) for token in bpe.get_vocab() if len(token) == 1}
    span = -1
    while span + 1 in singles:
        span += 1
    return span if span >= 0 else None


def _max_representable_code(token_bytes: list[bytes | None]) -> int:
    """Largest K such that every code in [0, K] can be encoded.

    The BPE model splits a word into byte symbols before merging and drops symbols that are not in
    its vocabulary, so a code is encodable exactly when each byte of its UTF-8 form is a token.
    A dropped code would come back as a decoded sequence of the wrong length.
    """
    present = np.zeros(256, dtype=bool)
    present[[t[0] for t in token_bytes if t is not None and len(t) == 1]] = True
    codes = np.arange(_SURROGATE_START)
    lead = np.where(codes < 0x80, codes, np.where(codes < 0x800, 0xC0 | (codes >> 6), 0xE0 | (codes >> 12)))
    ok = present[lead]
    ok &= np.where(codes < 0x80, True, present[0x80 | (codes & 0x3F)])
    ok &= np.where(codes < 0x800, True, present[0x80 | ((codes >> 6) & 0x3F)])
    return int(np.argmin(ok)) - 1 if not ok.all() else _SURROGATE_START - 1


class FastTokenizer:
    """FAST tokenizer for action chunks ``[B, T, D]`` normalised to about [-1, 1].

    ``time_horizon`` / ``action_dim`` are optional defaults for :meth:`decode` (the published FAST+
    leaves them unset); they never change as a side effect of a call.
    """

    def __init__(
        self,
        bpe: Tokenizer,
        *,
        scale: float = 10.0,
        vocab_size: int = 1024,
        min_token: int = 0,
        time_horizon: int | None = None,
        action_dim: int | None = None,
        max_token: int | None = None,
        range_margin: int = 0,
        transform: str = transforms.DCT,
    ) -> None:
        """``max_token`` is the largest rounded coefficient of the fitting data (None: the initial alphabet's
        range, see :func:`_alphabet_span`); ``range_margin`` widens the accepted range by that many codes above
        it (never beyond what the vocabulary can encode); ``transform`` is applied along time before
        quantisation (:func:`lerobot_fastplus.fast.transforms.check_transform` lists the choices)."""
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}.")
        if range_margin < 0:
            raise ValueError(f"range_margin must be >= 0 (codes added above max_token), got {range_margin}.")
        self.bpe = bpe
        self.transform = transforms.check_transform(transform)
        self.scale = float(scale)
        self.vocab_size = int(vocab_size)
        self.min_token = int(min_token)
        self.time_horizon = time_horizon
        self.action_dim = action_dim
        self._token_bytes = _token_bytes_table(bpe)
        # the same table as flat arrays, for decoding whole batches at once
        sizes = np.array([-1 if raw is None else len(raw) for raw in self._token_bytes], dtype=np.int64)
        self._is_byte_token = sizes >= 0
        self._token_sizes = np.maximum(sizes, 0)
        self._token_starts = np.cumsum(self._token_sizes) - self._token_sizes
        self._token_blob = np.frombuffer(b"".join(raw or b"" for raw in self._token_bytes), dtype=np.uint8)
        representable = _max_representable_code(self._token_bytes)
        if max_token is None:
            span = _alphabet_span(bpe)
            fitted = representable if span is None else span
        else:
            fitted = int(max_token) - self.min_token
            if fitted < 0:
                raise ValueError(f"max_token={max_token} is below min_token={min_token}.")
        self.fitted_max_token = self.min_token + fitted
        self.range_margin = int(range_margin)
        self.max_code = min(fitted + self.range_margin, representable)

    # ------------------------------------------------------------------ properties
    @property
    def num_ids(self) -> int:
        """Number of token ids the BPE can emit (ids are ``0 .. num_ids - 1``)."""
        return len(self._token_bytes)

    @property
    def max_token(self) -> int:
        """Largest rounded coefficient that encode accepts and a valid decode contains."""
        return self.min_token + self.max_code

    @property
    def token_bytes(self) -> list[bytes | None]:
        """UTF-8 bytes of every token id (None for ids that are not byte-level tokens)."""
        return self._token_bytes

    def __repr__(self) -> str:
        return (
            f"FastTokenizer(transform={self.transform}, scale={self.scale:g}, vocab_size={self.vocab_size}, "
            f"min_token={self.min_token}, max_token={self.max_token}, num_ids={self.num_ids}, "
            f"time_horizon={self.time_horizon}, action_dim={self.action_dim})"
        )

    # ------------------------------------------------------------------ fit
    @classmethod
    def fit(
        cls,
        chunks: np.ndarray | Sequence[np.ndarray],
        *,
        scale: float = 10.0,
        vocab_size: int = 1024,
        range_margin: int = 0,
        transform: str = transforms.DCT,
        show_progress: bool = False,
    ) -> FastTokenizer:
        """Train the BPE on normalised action chunks ``[N, T, D]`` (all chunks of one shape); the accepted code
        range is the fitted one, ``range_margin`` codes wider at the top. Every transform works for every
        horizon (each gives exactly ``T`` coefficients per dimension)."""
        stacked = chunks if isinstance(chunks, np.ndarray) else np.stack(list(chunks))
        arr = _as_chunk_batch(stacked, "chunks", allow_single=False)
        if arr.shape[0] < MIN_FIT_CHUNKS:
            raise ValueError(
                f"got {arr.shape[0]} chunk(s); fitting a FAST tokenizer needs at least {MIN_FIT_CHUNKS} "
                "(BPE merges need repeated pairs). Use more episodes or a smaller chunk stride."
            )
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}.")
        transform = transforms.check_transform(transform)
        with np.errstate(over="ignore", invalid="ignore"):
            scaled = np.rint(transforms.forward(arr, transform) * scale)
        low, high = scaled.min(), scaled.max()
        if not high - low < _SURROGATE_START:  # checked in floating point: also catches overflow
            raise ValueError(
                f"rounded {transforms.coefficient_label(transform)}s span {high - low:.6g} values "
                f"({low:.6g}..{high:.6g}), too many to tokenize. Normalise actions to about [-1, 1] first (LeRobot's "
                "QUANTILES or MIN_MAX mode) or lower scale."
            )
        rounded = scaled.astype(np.int64)
        min_token, max_token = int(low), int(high)
        span = max_token - min_token
        alphabet = sorted({chr(i) for i in range(span + 1)} | _byte_level_symbols())
        if len(alphabet) >= vocab_size:
            raise ValueError(
                f"vocab_size={vocab_size} leaves no room for BPE merges: the coefficients span {span + 1} "
                f"values ({min_token}..{max_token}) and the initial alphabet has {len(alphabet)} symbols. "
                f"Use vocab_size > {len(alphabet)} (e.g. {max(1024, 2 * len(alphabet))}), lower scale, or "
                "check that the actions are normalised to about [-1, 1]."
            )
        flat = (rounded - min_token).reshape(arr.shape[0], -1)
        strings = _codes_to_strings(flat)
        bpe = ByteLevelBPETokenizer()
        trainer = BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=2,
            show_progress=show_progress,
            special_tokens=[],
            initial_alphabet=alphabet,
            max_token_length=10000,
        )
        # ByteLevelBPETokenizer.train_from_iterator would replace our alphabet; train the inner model.
        bpe._tokenizer.train_from_iterator(strings, trainer=trainer, length=len(strings))
        return cls(
            bpe._tokenizer,
            scale=scale,
            vocab_size=vocab_size,
            min_token=min_token,
            time_horizon=arr.shape[1],
            action_dim=arr.shape[2],
            max_token=max_token,
            range_margin=range_margin,
            transform=transform,
        )

    # ------------------------------------------------------------------ encode
    def _scaled_coefficients(self, actions: np.ndarray) -> np.ndarray:
        """Scaled, unrounded coefficients ``[B, T*D]`` (C order: all dimensions' first coefficient first)."""
        arr = _as_chunk_batch(actions, "actions")
        with np.errstate(over="ignore", invalid="ignore"):
            coefficients = transforms.forward(arr, self.transform) * self.scale
        return coefficients.reshape(arr.shape[0], arr.shape[1] * arr.shape[2])

    def _outside(self, rounded: np.ndarray) -> np.ndarray:
        """Where rounded coefficients leave [min_token, max_token] (non-finite ones included)."""
        with np.errstate(invalid="ignore"):
            return ~((rounded >= self.min_token) & (rounded <= self.max_token))

    def out_of_range(self, actions: np.ndarray) -> np.ndarray:
        """Per chunk, how many coefficients fall outside the tokenizer's code range (what ``clip=True`` clips)."""
        return self._outside(np.rint(self._scaled_coefficients(actions))).sum(axis=1)

    def codes(self, actions: np.ndarray, *, clip: bool = False) -> np.ndarray:
        """Integer codes ``[B, T*D]`` (rounded coefficients minus ``min_token``) of a batch.

        Coefficients outside the tokenizer's range raise, or with ``clip=True`` are clipped to it (in floating
        point, before rounding, so no magnitude can overflow the integer conversion)."""
        coefficients = self._scaled_coefficients(actions)
        rounded = np.rint(coefficients)
        outside = self._outside(rounded)
        if outside.any():
            bad = coefficients[outside]
            if not clip or not np.isfinite(bad).all():
                overflow = "" if np.isfinite(bad).all() else " (some overflow float64)"
                raise ValueError(
                    f"actions give {int(outside.sum())} {transforms.coefficient_label(self.transform)}(s) outside "
                    f"this tokenizer's range: scaled values {np.nanmin(bad):.6g}..{np.nanmax(bad):.6g}, accepted "
                    f"{self.min_token} to {self.max_token}{overflow}. Normalise actions to about [-1, 1] with the "
                    "statistics the tokenizer was fitted on (LeRobot's QUANTILES mode), refit it on this data with "
                    "fastplus-train-tokenizer, widen its range (range_margin), or pass clip=True to clip the "
                    "coefficients."
                )
            rounded = np.rint(np.clip(coefficients, self.min_token, self.max_token))
        return rounded.astype(np.int64) - self.min_token

    def encode(self, actions: np.ndarray, *, clip: bool = False) -> list[list[int]]:
        """Token ids of each chunk in ``actions`` (``[B, T, D]`` or ``[T, D]``): a ragged list of lists."""
        strings = _codes_to_strings(self.codes(actions, clip=clip))
        return [enc.ids for enc in self.bpe.encode_batch_fast(strings, add_special_tokens=False)]

    # ------------------------------------------------------------------ decode
    def decode(
        self,
        ids: Sequence[Sequence[int]] | np.ndarray,
        *,
        time_horizon: int | None = None,
        action_dim: int | None = None,
    ) -> DecodeResult:
        """Decode token id sequences into chunks ``[B, T, D]``; never raises on the ids themselves.

        A sequence is valid when it decodes to exactly ``T * D`` codes, all inside the tokenizer's range, so its
        actions re-encode to the same codes; any other sequence (wrong length, split character, out-of-range
        code, ids that are not integers) decodes to zeros with ``valid=False`` and a reason."""
        horizon = time_horizon or self.time_horizon
        dim = action_dim or self.action_dim
        if not horizon or not dim:
            raise ValueError(
                "decode needs the chunk shape: pass time_horizon= and action_dim=, or set them on the "
                "tokenizer (the published FAST+ files leave them unset)."
            )
        flat, lengths, reasons = _flat_ids(ids)
        n = len(lengths)
        actions = np.zeros((n, horizon, dim), dtype=np.float64)
        valid = np.zeros(n, dtype=bool)
        if n == 0:
            return DecodeResult(actions, valid, reasons)

        # the id checks, in order of precedence: a row keeps the first reason it gets
        row_of = np.repeat(np.arange(n), lengths)
        unknown = (flat < 0) | (flat >= self.num_ids)
        not_bytes = ~self._is_byte_token[np.where(unknown, 0, flat)] & ~unknown
        for flagged, reason in (
            (lengths == 0, "empty token sequence"),
            (np.bincount(row_of[unknown], minlength=n), f"token id out of range [0, {self.num_ids})"),
            (np.bincount(row_of[not_bytes], minlength=n), "token ids must be ids of byte-level tokens"),
        ):
            for i in np.flatnonzero(flagged).tolist():
                if reasons[i] is None:
                    reasons[i] = reason
        candidate = np.array([reason is None for reason in reasons])
        if not candidate.any():
            return DecodeResult(actions, valid, reasons)

        # the bytes of the remaining rows, gathered from the token table into one buffer, and their code points
        rows = np.flatnonzero(candidate)
        kept = flat if len(rows) == n else flat[candidate[row_of]]
        sizes = self._token_sizes[kept]
        byte_ends = np.cumsum(sizes)
        gather = np.repeat(self._token_starts[kept] - (byte_ends - sizes), sizes) + np.arange(byte_ends[-1])
        codes, counts, utf8 = _utf8_rows(self._token_blob[gather].tobytes(), byte_ends[np.cumsum(lengths[rows]) - 1])
        for i in rows[~utf8].tolist():
            reasons[i] = "tokens split a multi-byte character (invalid UTF-8)"

        expected = horizon * dim
        complete = utf8 & (counts == expected)
        for i, count in zip(rows[utf8 & ~complete].tolist(), counts[utf8 & ~complete].tolist(), strict=True):
            reasons[i] = f"decoded {count} coefficients, expected {horizon}x{dim}={expected}"
        if not complete.any():
            return DecodeResult(actions, valid, reasons)
        block = (
            codes.reshape(-1, expected) if complete.all() else codes[np.repeat(complete, counts)].reshape(-1, expected)
        )
        top = block.max(axis=1)
        inside = top <= self.max_code
        for i, code in zip(rows[complete][~inside].tolist(), top[~inside].tolist(), strict=True):
            reasons[i] = (
                f"coefficient {code + self.min_token} outside the tokenizer's range {self.min_token}..{self.max_token}"
            )
        good = rows[complete][inside]
        # integers below 2**53: adding in float64 is exact, the same values as adding in int64 and converting
        coefficients = (block if inside.all() else block[inside]).astype(np.float64)
        coefficients += self.min_token
        coefficients /= self.scale
        decoded = transforms.inverse(coefficients.reshape(len(good), horizon, dim), self.transform)
        if len(good) == n:
            actions = decoded
        else:
            actions[good] = decoded
        valid[good] = True
        return DecodeResult(actions, valid, reasons)

    # ------------------------------------------------------------------ persistence
    def config_dict(self) -> dict[str, Any]:
        """The ``processor_config.json`` content (readable by the reference ``UniversalActionProcessor``; a
        non-DCT tokenizer adds its ``transform``, which the reference would ignore)."""
        extra = {} if self.transform == transforms.DCT else {"transform": self.transform}
        return {
            "processor_class": "UniversalActionProcessor",
            "scale": self.scale,
            "vocab_size": self.vocab_size,
            "min_token": self.min_token,
            "time_horizon": self.time_horizon,
            "action_dim": self.action_dim,
            "max_token": self.fitted_max_token,
            "range_margin": self.range_margin,
            **extra,
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild the tokenizer, as JSON-serialisable data."""
        return {**self.config_dict(), "tokenizer": json.loads(self.bpe.to_str())}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FastTokenizer:
        if "tokenizer" not in data:
            raise ValueError("serialised FAST tokenizer has no 'tokenizer' entry (the BPE model).")
        return cls(
            Tokenizer.from_str(json.dumps(data["tokenizer"])),
            scale=data.get("scale", 10),
            vocab_size=data.get("vocab_size", 1024),
            min_token=data.get("min_token", 0),
            time_horizon=data.get("time_horizon"),
            action_dim=data.get("action_dim"),
            max_token=data.get("max_token"),
            range_margin=data.get("range_margin", 0),
            transform=data.get("transform", transforms.DCT),
        )

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the published directory format plus this project's ``AutoProcessor`` module; each file is replaced
        atomically.

        ``auto_map`` and the copied module let ``AutoProcessor.from_pretrained(directory, trust_remote_code=True)``
        (how core LeRobot loads FAST tokenizers) work without this package; :meth:`load` and the reference's loader
        read only the JSON files.
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        tokenizer_config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "clean_up_tokenization_spaces": False,
            "model_max_length": 1_000_000,
        }
        processor_config = {**self.config_dict(), "auto_map": {"AutoProcessor": AUTO_PROCESSOR}}
        module = AUTO_PROCESSOR.split(".")[0] + ".py"
        files = {
            TOKENIZER_FILE: self.bpe.to_str(pretty=True),
            TOKENIZER_CONFIG: json.dumps(tokenizer_config, indent=2),
            PROCESSOR_CONFIG: json.dumps(processor_config, indent=2),
            module: resources.files(__package__).joinpath(module).read_text(encoding="utf-8"),
        }
        for name, text in files.items():
            fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{name}.")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, out / name)
        return out

    @classmethod
    def load(cls, path_or_repo_id: str | os.PathLike, *, revision: str | None = None) -> FastTokenizer:
        """Load a tokenizer directory (ours or a published FAST/FAST+) from disk or the Hugging Face hub.

        Raises ``ValueError`` naming the fix for a path that does not exist, a folder that is not a FAST
        tokenizer (empty, a text tokenizer, the tool's output folder instead of its ``tokenizer/``, a checkpoint
        instead of its ``fast_tokenizer/``) and unreadable or foreign files.
        """
        location = Path(path_or_repo_id).expanduser()
        if not location.exists():
            location = _download(str(path_or_repo_id), revision)
        if not location.is_dir():
            raise ValueError(f"{location} is not a directory; a FAST tokenizer is a directory of JSON files.")
        missing = [name for name in (PROCESSOR_CONFIG, TOKENIZER_FILE) if not (location / name).is_file()]
        if missing:
            raise ValueError(
                f"{location} is not a FAST tokenizer directory: missing {', '.join(missing)}. "
                f"{_directory_hint(location)}Expected the files written by fastplus-train-tokenizer (in "
                "<output_dir>/tokenizer) or published as physical-intelligence/fast."
            )
        try:
            config = json.loads((location / PROCESSOR_CONFIG).read_text())
            bpe = Tokenizer.from_file(str(location / TOKENIZER_FILE))
        except Exception as err:
            raise ValueError(f"could not read the FAST tokenizer in {location}: {err}") from err
        if not isinstance(config, dict) or "scale" not in config or "min_token" not in config:
            raise ValueError(
                f"{location / PROCESSOR_CONFIG} lacks 'scale'/'min_token': it is not a FAST processor config."
            )
        model = type(bpe.model).__name__
        if model != "BPE":
            raise ValueError(
                f"{location / TOKENIZER_FILE} holds a {model} model, not FAST's byte-level BPE: {location} is not a "
                "FAST action tokenizer (a text tokenizer?). Fit one with fastplus-train-tokenizer."
            )
        try:
            transform = transforms.check_transform(config.get("transform", transforms.DCT))
        except ValueError as err:
            raise ValueError(f"{location / PROCESSOR_CONFIG}: {err}") from None
        return cls(
            bpe,
            scale=config["scale"],
            vocab_size=config.get("vocab_size", bpe.get_vocab_size()),
            min_token=config["min_token"],
            time_horizon=config.get("time_horizon"),
            action_dim=config.get("action_dim"),
            max_token=config.get("max_token"),
            range_margin=config.get("range_margin", 0),
            transform=transform,
        )


def _directory_hint(location: Path) -> str:
    """Where the tokenizer probably is when ``location`` is a folder that holds one, or what it is instead."""
    for sub, what in (("tokenizer", "fastplus-train-tokenizer's output folder"), ("fast_tokenizer", "a checkpoint")):
        if (location / sub / PROCESSOR_CONFIG).is_file():
            return f"It looks like {what}; the tokenizer is {location / sub}. "
    if (location / TOKENIZER_FILE).is_file():
        return "It holds a tokenizer.json but no processor_config.json: it looks like a text tokenizer. "
    if not any(location.iterdir()):
        return "The directory is empty. "
    return ""


def _download(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise ValueError(
            f"FAST tokenizer '{repo_id}' is neither a local directory nor downloadable from the hub: "
            f"{Path(repo_id).expanduser().absolute()} does not exist, and it is not a hub repo id (owner/name). "
            "Pass the directory holding processor_config.json and tokenizer.json (fastplus-train-tokenizer writes "
            "it to <output_dir>/tokenizer)."
        ) from None
    try:
        return Path(snapshot_download(repo_id=repo_id, revision=revision, allow_patterns=["*.json"]))
    except Exception as err:
        raise ValueError(
            f"FAST tokenizer '{repo_id}' is neither a local directory ({Path(repo_id).absolute()} does not exist) "
            f"nor downloadable from the hub ({type(err).__name__}: {err}). Pass the directory holding "
            "processor_config.json and tokenizer.json (fastplus-train-tokenizer writes it to <output_dir>/tokenizer)."
        ) from err
