"""``AutoProcessor`` class of a FAST tokenizer directory, for loaders that know only LeRobot and transformers.

``FastTokenizer.save`` copies this file into the directory it writes and names it in ``processor_config.json``'s
``auto_map``, so ``AutoProcessor.from_pretrained(directory, trust_remote_code=True)`` works wherever core LeRobot is
installed: that is how LeRobot's ``ActionTokenizerProcessorStep``, core pi0_fast and the consumers of
``lerobot-train-tokenizer`` load a FAST tokenizer. The file must stay self-contained (numpy, scipy, tokenizers,
transformers): the directory has to load where this package is not installed.

It offers the part of Physical Intelligence's ``UniversalActionProcessor`` that core uses: calling it on a chunk
``[T, D]`` or a batch ``[B, T, D]`` gives one list of token ids per chunk, ``decode`` gives ``[B, T, D]`` actions,
and ``bpe_tokenizer``, ``scale``, ``min_token``, ``vocab_size``, ``time_horizon`` and ``action_dim`` are attributes.
On the same files it gives the same ids and actions as ``lerobot_fastplus.fast.FastTokenizer``, whose rules it
follows where the reference has none:

* coefficients outside the tokenizer's range are clipped to it, counted in a rate-limited warning (``clip=False``
  raises instead); the reference clips only below and lets the BPE drop characters it cannot encode;
* ``decode`` turns every sequence that is not a whole chunk inside the range (wrong length, a split multi-byte
  character, an unknown id) into zeros with a warning, as the reference does only for wrong lengths;
* nothing is remembered between calls: ``decode`` takes the chunk shape as arguments or from the saved config.

Only DCT tokenizers load here. A directory whose config names another ``transform`` (a wavelet, or none) is refused:
core pi0_fast decodes FAST tokens with its own inverse DCT from ``bpe_tokenizer``, ``min_token`` and ``scale``, so
such tokens would silently become wrong actions there.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from scipy.fft import dct, idct
from tokenizers import pre_tokenizers
from transformers.processing_utils import ProcessorMixin

logger = logging.getLogger(__name__)

# Code points from the UTF-16 surrogates on have no UTF-8 form, so no coefficient may map to them.
_FIRST_SURROGATE = 0xD800
CLIP_WARNING_INTERVAL_S = 60.0


def _byte_symbols() -> list[str]:
    """The character the byte-level pre-tokenizer shows for each byte value 0..255.

    ``ByteLevel.alphabet()`` holds the printable bytes as themselves and stand-ins from U+0100 on for the others,
    assigned in byte order.
    """
    alphabet = set(pre_tokenizers.ByteLevel.alphabet())
    stand_ins = iter(sorted(c for c in alphabet if ord(c) > 255))
    return [chr(b) if chr(b) in alphabet else next(stand_ins) for b in range(256)]


def _encodable_top(vocab: dict[str, int]) -> int:
    """Largest K such that every code 0..K can be tokenized (-1 if code 0 cannot).

    Before merging, the BPE splits a word into byte symbols and drops those missing from its vocabulary, so a code
    survives exactly when every byte of its UTF-8 form is a token of its own.
    """
    known = {b for b, symbol in enumerate(_byte_symbols()) if symbol in vocab}
    for code in range(_FIRST_SURROGATE):
        if not known.issuperset(chr(code).encode()):
            return code - 1
    return _FIRST_SURROGATE - 1


def _initial_alphabet_top(vocab: dict[str, int]) -> int | None:
    """Largest K such that chr(0)..chr(K) are all single-character tokens, or None.

    A FAST fit puts every character of its coefficient range into the initial alphabet, so this recovers the fitted
    range of files that do not record ``max_token`` (the published FAST+ and reference-fitted ones).
    """
    singles = {ord(token) for token in vocab if len(token) == 1}
    top = -1
    while top + 1 in singles:
        top += 1
    return top if top >= 0 else None


class FastActionProcessor(ProcessorMixin):
    """FAST action tokenizer: DCT along time, scale and round, byte-level BPE over ``chr(code)`` strings.

    The arguments are the keys of ``processor_config.json``; all are positional-or-keyword because transformers only
    passes those from the config to ``__init__``. ``max_token`` is the largest rounded coefficient of the fitting data
    (None: the initial alphabet's range) and ``range_margin`` widens the accepted range by that many codes above it.
    ``transform`` must be ``"dct"`` (see the module docstring).
    """

    def __init__(
        self,
        tokenizer: Any,
        scale: float = 10.0,
        vocab_size: int = 1024,
        min_token: int = 0,
        time_horizon: int | None = None,
        action_dim: int | None = None,
        max_token: int | None = None,
        range_margin: int = 0,
        transform: str = "dct",
    ) -> None:
        if str(transform).lower() != "dct":
            raise ValueError(
                f"this FAST tokenizer quantises a {transform!r} transform, not FAST's DCT. Core LeRobot loads FAST "
                "tokenizers through this class (ActionTokenizerProcessorStep, pi0_fast) and core pi0_fast decodes the "
                "tokens with an inverse DCT of its own, so they would become wrong actions there. Use this tokenizer "
                "with lerobot_fastplus (FastTokenizer.load, the plugin's pi0_fast and pi05_ki), or refit it with "
                "fastplus-train-tokenizer --transform=dct."
            )
        super().__init__(tokenizer)
        self.scale = float(scale)
        self.vocab_size = int(vocab_size)
        self.min_token = int(min_token)
        self.time_horizon = time_horizon
        self.action_dim = action_dim
        self.max_token = max_token
        self.range_margin = int(range_margin)
        vocab = tokenizer.get_vocab()
        encodable = _encodable_top(vocab)
        if max_token is None:
            alphabet_top = _initial_alphabet_top(vocab)
            fitted = encodable if alphabet_top is None else alphabet_top
        else:
            fitted = int(max_token) - self.min_token
        self._top_code = min(fitted + self.range_margin, encodable)
        self._num_ids = len(vocab)
        self._clipped_since_warning = 0
        self._last_clip_warning = -float("inf")

    @property
    def bpe_tokenizer(self) -> Any:
        """The text tokenizer over code characters (core pi0_fast decodes with ``bpe_tokenizer.decode``)."""
        return self.tokenizer

    @property
    def accepted_range(self) -> tuple[int, int]:
        """Smallest and largest rounded DCT coefficient that calls encode unchanged and a valid decode contains."""
        return self.min_token, self.min_token + self._top_code

    def __call__(self, action_chunk: Any, *, clip: bool = True) -> list[list[int]]:
        """Token ids of each chunk in ``action_chunk`` (``[B, T, D]`` or ``[T, D]``, numpy or torch, normalised to about
        [-1, 1]): a ragged list of lists."""
        actions = np.asarray(action_chunk, dtype=np.float64)
        if actions.ndim == 2:
            actions = actions[None]
        if actions.ndim != 3 or 0 in actions.shape[1:]:
            raise ValueError(
                f"expected actions [batch, time, action_dim] or [time, action_dim], got shape {actions.shape}."
            )
        if not np.isfinite(actions).all():
            raise ValueError("actions contain NaN or inf; repair or drop those frames before tokenizing.")
        coefficients = np.rint(dct(actions, axis=1, norm="ortho") * self.scale).reshape(len(actions), -1)
        low, high = self.accepted_range
        outside = (coefficients < low) | (coefficients > high)
        if outside.any():
            if not clip or not np.isfinite(coefficients).all():
                raise ValueError(
                    f"{int(outside.sum())} rounded DCT coefficient(s) lie outside this tokenizer's range {low}..{high} "
                    f"(seen {coefficients.min():.6g}..{coefficients.max():.6g}). Normalise actions with the statistics "
                    "the tokenizer was fitted on, refit it on this data, or call with clip=True."
                )
            np.clip(coefficients, low, high, out=coefficients)
            self._report_clipping(int(outside.sum()), coefficients.size)
        codes = (coefficients - low).astype(np.int64)
        texts = ["".join(map(chr, row)) for row in codes.tolist()]
        if not texts:
            return []
        return [list(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def _report_clipping(self, clipped: int, total: int) -> None:
        self._clipped_since_warning += clipped
        now = time.monotonic()
        if now - self._last_clip_warning >= CLIP_WARNING_INTERVAL_S:
            logger.warning(
                "FAST tokenizer clipped %d DCT coefficient(s) to its range %d..%d since the last report (%d of %d in "
                "this call). Actions are probably normalised differently from the data it was fitted on; refit it if "
                "this happens often.",
                self._clipped_since_warning,
                *self.accepted_range,
                clipped,
                total,
            )
            self._clipped_since_warning = 0
            self._last_clip_warning = now

    def decode(self, tokens: Any, *, time_horizon: int | None = None, action_dim: int | None = None) -> np.ndarray:
        """Actions ``[B, T, D]`` from one id sequence per chunk; never raises on the ids themselves.

        A sequence that does not decode to exactly ``T * D`` codes inside the tokenizer's range gives zeros (and a
        warning), so no decoded chunk is garbage.
        """
        horizon = time_horizon or self.time_horizon
        dim = action_dim or self.action_dim
        if not horizon or not dim:
            raise ValueError(
                "decode needs the chunk shape: pass time_horizon= and action_dim= (this tokenizer's config leaves them "
                "unset)."
            )
        rows = tokens.tolist() if hasattr(tokens, "tolist") else list(tokens)
        actions = np.zeros((len(rows), horizon, dim), dtype=np.float64)
        failures = []
        for i, row in enumerate(rows):
            codes = self._codes(row, horizon * dim)
            if isinstance(codes, str):
                failures.append(f"sequence {i}: {codes}")
            else:
                coefficients = (codes + self.min_token).reshape(horizon, dim) / self.scale
                actions[i] = idct(coefficients, axis=0, norm="ortho")
        if failures:
            logger.warning(
                "FAST decode gave zeros for %d of %d sequence(s); first: %s", len(failures), len(rows), failures[0]
            )
        return actions

    def _codes(self, row: Any, expected: int) -> np.ndarray | str:
        """The integer codes one id sequence stands for, or why it stands for no chunk."""
        ids = row.tolist() if hasattr(row, "tolist") else row
        if not isinstance(ids, list | tuple) or not all(
            isinstance(i, int | np.integer) and not isinstance(i, bool) for i in ids
        ):
            return f"not a flat sequence of integer token ids: {row!r:.60}"
        ids = [int(i) for i in ids]
        if any(i < 0 or i >= self._num_ids for i in ids):
            return f"token id outside [0, {self._num_ids})"
        text = self.tokenizer.backend_tokenizer.decode(ids, skip_special_tokens=False)
        codes = np.array([ord(c) for c in text], dtype=np.int64)
        if len(codes) != expected:
            return f"{len(codes)} coefficients instead of {expected}"
        if codes.max(initial=0) > self._top_code:  # also a split multi-byte character: it decodes to U+FFFD
            return "a coefficient outside the tokenizer's range (or a split multi-byte character)"
        return codes
