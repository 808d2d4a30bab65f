"""FAST action tokenizer: DCT along time, scale and round, byte-level BPE.

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
  inside the fitted range stays encodable even when it never occurred in the training chunks.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.fft import dct, idct
from tokenizers import ByteLevelBPETokenizer, Tokenizer, pre_tokenizers
from tokenizers.trainers import BpeTrainer

PROCESSOR_CONFIG = "processor_config.json"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"

MIN_FIT_CHUNKS = 8
# Code points from here on are UTF-16 surrogates: they have no UTF-8 form, so no token can carry them.
_SURROGATE_START = 0xD800


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


def _as_list(seq: Any) -> list:
    if isinstance(seq, list):
        return seq
    if isinstance(seq, np.ndarray):
        return seq.reshape(-1).tolist()
    return list(seq)


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
    ) -> None:
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}.")
        self.bpe = bpe
        self.scale = float(scale)
        self.vocab_size = int(vocab_size)
        self.min_token = int(min_token)
        self.time_horizon = time_horizon
        self.action_dim = action_dim
        self._token_bytes = _token_bytes_table(bpe)
        self.max_code = _max_representable_code(self._token_bytes)

    # ------------------------------------------------------------------ properties
    @property
    def num_ids(self) -> int:
        """Number of token ids the BPE can emit (ids are ``0 .. num_ids - 1``)."""
        return len(self._token_bytes)

    @property
    def max_token(self) -> int:
        """Largest rounded DCT coefficient that can be encoded."""
        return self.min_token + self.max_code

    def __repr__(self) -> str:
        return (
            f"FastTokenizer(scale={self.scale:g}, vocab_size={self.vocab_size}, min_token={self.min_token}, "
            f"num_ids={self.num_ids}, time_horizon={self.time_horizon}, action_dim={self.action_dim})"
        )

    # ------------------------------------------------------------------ fit
    @classmethod
    def fit(
        cls,
        chunks: np.ndarray | Sequence[np.ndarray],
        *,
        scale: float = 10.0,
        vocab_size: int = 1024,
        show_progress: bool = False,
    ) -> FastTokenizer:
        """Train the BPE on normalised action chunks ``[N, T, D]`` (all chunks of one shape)."""
        stacked = chunks if isinstance(chunks, np.ndarray) else np.stack(list(chunks))
        arr = _as_chunk_batch(stacked, "chunks", allow_single=False)
        if arr.shape[0] < MIN_FIT_CHUNKS:
            raise ValueError(
                f"got {arr.shape[0]} chunk(s); fitting a FAST tokenizer needs at least {MIN_FIT_CHUNKS} "
                "(BPE merges need repeated pairs). Use more episodes or a smaller chunk stride."
            )
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}.")
        rounded = np.rint(dct(arr, axis=1, norm="ortho") * scale).astype(np.int64)
        min_token, max_token = int(rounded.min()), int(rounded.max())
        span = max_token - min_token
        if span >= _SURROGATE_START:
            raise ValueError(
                f"rounded DCT coefficients span {span} values ({min_token}..{max_token}), too many to tokenize. "
                "Normalise actions to about [-1, 1] first (LeRobot's QUANTILES or MIN_MAX mode) or lower scale."
            )
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
        )

    # ------------------------------------------------------------------ encode
    def _unclipped_codes(self, actions: np.ndarray) -> np.ndarray:
        arr = _as_chunk_batch(actions, "actions")
        codes = np.rint(dct(arr, axis=1, norm="ortho") * self.scale).astype(np.int64) - self.min_token
        return codes.reshape(arr.shape[0], -1)

    def out_of_range(self, actions: np.ndarray) -> np.ndarray:
        """Per chunk, how many coefficients fall outside what the vocabulary can encode."""
        codes = self._unclipped_codes(actions)
        return ((codes < 0) | (codes > self.max_code)).sum(axis=1)

    def codes(self, actions: np.ndarray, *, clip: bool = False) -> np.ndarray:
        """Integer codes ``[B, T*D]`` (rounded DCT coefficients minus ``min_token``) of a batch."""
        codes = self._unclipped_codes(actions)
        low, high = codes.min(initial=0), codes.max(initial=0)
        if low < 0 or high > self.max_code:
            if not clip:
                raise ValueError(
                    "actions give DCT coefficients outside what this tokenizer can encode: rounded range "
                    f"{low + self.min_token}..{high + self.min_token}, encodable from {self.min_token} up to "
                    f"{self.max_token}. Normalise actions to about [-1, 1] with the statistics the tokenizer "
                    "was fitted on (LeRobot's QUANTILES mode), refit it on this data with "
                    "fastplus-train-tokenizer, or pass clip=True to clip the coefficients."
                )
            np.clip(codes, 0, self.max_code, out=codes)
        return codes

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
        """Decode token id sequences into chunks ``[B, T, D]``; never raises on the ids themselves."""
        horizon = time_horizon or self.time_horizon
        dim = action_dim or self.action_dim
        if not horizon or not dim:
            raise ValueError(
                "decode needs the chunk shape: pass time_horizon= and action_dim=, or set them on the "
                "tokenizer (the published FAST+ files leave them unset)."
            )
        n = len(ids)
        actions = np.zeros((n, horizon, dim), dtype=np.float64)
        valid = np.zeros(n, dtype=bool)
        reasons: list[str | None] = [None] * n
        if n == 0:
            return DecodeResult(actions, valid, reasons)

        sequences = ids.tolist() if isinstance(ids, np.ndarray) else [_as_list(seq) for seq in ids]
        num_ids = self.num_ids
        candidates: list[int] = []
        for i, seq in enumerate(sequences):
            if not seq:
                reasons[i] = "empty token sequence"
            elif min(seq) < 0 or max(seq) >= num_ids:
                reasons[i] = f"token id out of range [0, {num_ids})"
            else:
                candidates.append(i)
        expected = horizon * dim
        table = self._token_bytes
        good_rows: list[int] = []
        good_texts: list[str] = []
        for i in candidates:
            try:
                text = b"".join([table[t] for t in sequences[i]]).decode("utf-8")
            except UnicodeDecodeError:
                reasons[i] = "tokens split a multi-byte character (invalid UTF-8)"
            except TypeError:  # a non-integer id, or an id that is not a byte-level token
                reasons[i] = "token ids must be integer ids of byte-level tokens"
            else:
                if len(text) == expected:
                    good_rows.append(i)
                    good_texts.append(text)
                else:
                    reasons[i] = f"decoded {len(text)} coefficients, expected {horizon}x{dim}={expected}"
        if good_rows:
            codes = np.frombuffer("".join(good_texts).encode("utf-32-le"), dtype="<u4")
            coeff = (codes.astype(np.int64) + self.min_token).reshape(len(good_rows), horizon, dim)
            actions[good_rows] = idct(coeff / self.scale, axis=1, norm="ortho")
            valid[good_rows] = True
        return DecodeResult(actions, valid, reasons)

    # ------------------------------------------------------------------ persistence
    def config_dict(self) -> dict[str, Any]:
        """The ``processor_config.json`` content (readable by the reference ``UniversalActionProcessor``)."""
        return {
            "processor_class": "UniversalActionProcessor",
            "scale": self.scale,
            "vocab_size": self.vocab_size,
            "min_token": self.min_token,
            "time_horizon": self.time_horizon,
            "action_dim": self.action_dim,
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
        )

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the published directory format; each file is replaced atomically."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        tokenizer_config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "clean_up_tokenization_spaces": False,
            "model_max_length": 1_000_000,
        }
        files = {
            TOKENIZER_FILE: self.bpe.to_str(pretty=True),
            TOKENIZER_CONFIG: json.dumps(tokenizer_config, indent=2),
            PROCESSOR_CONFIG: json.dumps(self.config_dict(), indent=2),
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
        return cls(
            bpe,
            scale=config["scale"],
            vocab_size=config.get("vocab_size", bpe.get_vocab_size()),
            min_token=config["min_token"],
            time_horizon=config.get("time_horizon"),
            action_dim=config.get("action_dim"),
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
