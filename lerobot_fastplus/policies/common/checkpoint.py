"""Strict checkpoint loading shared by the plugin's policies, streamed from the file into the model.

LeRobot's pi05 / pi0_fast ``from_pretrained`` print and swallow load errors and return a randomly initialised
model. Here every problem raises: a missing or unreadable file, and any missing, unexpected or wrongly shaped
tensor, each named, before any tensor is read.

The checkpoint is never held as a second copy of the model: only its header is read up front (``read_header``),
and ``load_strictly`` copies each tensor into its model tensor (allocating it, in the model's dtype and on the
requested device, when it is still on the meta device), a slice of rows at a time. safetensors memory-maps the
file, and every mapped page that was read stays resident, counted in the process's RSS, until the file is
closed; the reader therefore reopens the file after every ``READ_BUDGET`` bytes.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import hf_hub_download, snapshot_download
from huggingface_hub.constants import SAFETENSORS_SINGLE_FILE
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from safetensors import safe_open
from torch import Tensor, nn

FAST_TOKENIZER_DIR = "fast_tokenizer"  # copy of the FAST tokenizer inside every saved checkpoint
CHECKPOINT_LAYOUT = (
    "Pass a checkpoint directory (the pretrained_model/ folder holding model.safetensors and config.json, e.g. "
    "outputs/train/<run>/checkpoints/last/pretrained_model) or a hub repo id such as lerobot/pi05_base."
)
READ_BUDGET = 64 * 2**20  # checkpoint bytes read through one opening of the file
_ITEM_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


@dataclass(frozen=True)
class TensorRef:
    """A tensor of a safetensors file, by name, shape and dtype code; its data is read only when it is loaded."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def clone(self) -> TensorRef:
        """Core's key fixers copy a tensor under a second name with ``.clone()``: both names then read this one."""
        return self

    @property
    def row_bytes(self) -> int:
        return math.prod(self.shape[1:]) * _ITEM_BYTES.get(self.dtype, 8)


def locate_weights(source: str | Path, what: str, **hub_kwargs: Any) -> Path:
    """``model.safetensors`` of a local checkpoint directory or hub id; ``FileNotFoundError`` naming the fix.

    Cheap (a hub file is fetched once and cached), so a policy can check its ``init_from`` before building a model.
    """
    source = str(source)
    local = Path(source).expanduser()
    if local.is_dir():
        path = local / SAFETENSORS_SINGLE_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} does not exist: {source} is not a {what} checkpoint directory. {_checkpoint_hint(local)}"
            )
        return path
    try:
        validate_repo_id(source)
    except HFValidationError:
        state = "is a file, not a directory" if local.exists() else "does not exist"
        raise FileNotFoundError(
            f"{source} {state}, and it is not a hub repo id (owner/name) either. {CHECKPOINT_LAYOUT}"
        ) from None
    try:
        return Path(hf_hub_download(repo_id=source, filename=SAFETENSORS_SINGLE_FILE, **hub_kwargs))
    except Exception as err:
        raise FileNotFoundError(
            f"{source} is not a local directory ({local.absolute()} does not exist), and its "
            f"{SAFETENSORS_SINGLE_FILE} could not be fetched from the hub ({type(err).__name__}: {err}). "
            f"{CHECKPOINT_LAYOUT}"
        ) from err


def locate_init_weights(init_from: str, what: str) -> Path:
    """``model.safetensors`` of a config's ``init_from``, with the flag named in the error. Policies call it before
    they build a model, so a wrong path fails within seconds."""
    try:
        return locate_weights(init_from, what)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"--policy.init_from={init_from}: {err}") from err


def read_header(source: str | Path, what: str, **hub_kwargs: Any) -> tuple[Path, dict[str, TensorRef]]:
    """``model.safetensors`` of a local checkpoint directory or hub id, and its tensors (names, shapes, dtypes)."""
    path = locate_weights(source, what, **hub_kwargs)
    try:
        with safe_open(path, framework="pt") as file:
            refs = {}
            for name in file.keys():  # noqa: SIM118 (safe_open is not iterable)
                tensor = file.get_slice(name)
                refs[name] = TensorRef(name, tuple(tensor.get_shape()), tensor.get_dtype())
    except Exception as err:
        raise ValueError(f"could not read the weights in {path} (corrupted or not safetensors): {err}") from err
    return path, refs


def load_strictly(
    module: nn.Module,
    state: Mapping[str, TensorRef],
    path: Path,
    what: str,
    hint: str,
    device: str | torch.device | None = None,
) -> None:
    """Fill every state-dict tensor of ``module`` from the checkpoint tensors ``state`` (by state-dict key), after a
    check that names every missing, unexpected or wrongly shaped tensor. Tensors still on the meta device are
    allocated on ``device`` (default CPU) in their current dtype; the others are overwritten in place."""
    expected = module.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    mismatched = [
        f"{key}: checkpoint {tuple(state[key].shape)}, model {tuple(expected[key].shape)}"
        for key in sorted(expected.keys() & state.keys())
        if state[key].shape != expected[key].shape
    ]
    if missing or unexpected or mismatched:
        problems = _listing("missing", missing) + _listing("unexpected", unexpected)
        raise ValueError(
            f"the weights in {path} do not fit this {what}: {problems}{_listing('wrong shape', mismatched)}{hint}"
        )
    targets = module.state_dict(keep_vars=True)
    allocated: dict[int, Tensor] = {}  # meta tensor -> its replacement (a tied tensor is allocated once)
    with _Reader(path) as reader, torch.no_grad():
        for key, ref in state.items():
            target = targets[key]
            if target.is_meta:
                if id(target) not in allocated:
                    allocated[id(target)] = _allocated_like(target, device)
                owner, _, leaf = key.rpartition(".")
                setattr(module.get_submodule(owner), leaf, allocated[id(target)])
                target = allocated[id(target)]
            reader.copy_into(ref, target)


def checkpoint_fast_tokenizer_dir(source: str | Path, **hub_kwargs: Any) -> str | None:
    """The FAST tokenizer saved inside a checkpoint (local or hub), or None when it has none."""
    source = str(source)
    if os.path.isdir(source):
        local = Path(source) / FAST_TOKENIZER_DIR
        return str(local) if local.is_dir() else None
    hub = {key: hub_kwargs[key] for key in ("revision", "cache_dir", "token", "local_files_only") if key in hub_kwargs}
    root = Path(snapshot_download(repo_id=source, allow_patterns=[f"{FAST_TOKENIZER_DIR}/*"], **hub))
    return str(root / FAST_TOKENIZER_DIR) if (root / FAST_TOKENIZER_DIR).is_dir() else None


def _allocated_like(meta: Tensor, device: str | torch.device | None) -> Tensor:
    tensor = torch.empty(meta.shape, dtype=meta.dtype, device=device)
    return nn.Parameter(tensor, requires_grad=meta.requires_grad) if isinstance(meta, nn.Parameter) else tensor


class _Reader(contextlib.AbstractContextManager):
    """Copies tensors of a safetensors file into given tensors, at most ``READ_BUDGET`` bytes per opening of the
    file (see the module docstring), a slice of rows at a time for larger tensors."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._open = contextlib.ExitStack()
        self._file: Any = None
        self._read = 0

    def copy_into(self, ref: TensorRef, target: Tensor) -> None:
        total = ref.row_bytes * (ref.shape[0] if ref.shape else 1)
        if total <= READ_BUDGET or not ref.shape:
            target.copy_(self._reading(total).get_tensor(ref.name))
            return
        rows = max(1, READ_BUDGET // max(ref.row_bytes, 1))
        for start in range(0, ref.shape[0], rows):
            part = self._reading(rows * ref.row_bytes).get_slice(ref.name)[start : start + rows]
            target[start : start + rows].copy_(part)

    def _reading(self, nbytes: int) -> Any:
        if self._file is None or self._read + nbytes > READ_BUDGET:
            self._open.close()
            self._file = self._open.enter_context(safe_open(self.path, framework="pt"))
            self._read = 0
        self._read += nbytes
        return self._file

    def __exit__(self, *exc: object) -> None:
        self._open.close()


def _checkpoint_hint(directory: Path) -> str:
    """Where the checkpoint probably is when ``directory`` is a folder around one."""
    for inner, what in (
        (Path("pretrained_model"), "a checkpoint step folder"),
        (Path("checkpoints") / "last" / "pretrained_model", "a lerobot-train output folder"),
    ):
        if (directory / inner / SAFETENSORS_SINGLE_FILE).is_file():
            return f"It looks like {what}; the checkpoint is {directory / inner}."
    return CHECKPOINT_LAYOUT


def _listing(what: str, keys: list[str], limit: int = 8) -> str:
    if not keys:
        return ""
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"{len(keys)} {what} ({', '.join(keys[:limit])}{more}); "
