"""Strict checkpoint loading shared by the plugin's policies.

LeRobot's pi05 / pi0_fast ``from_pretrained`` print and swallow load errors and return a randomly initialised
model. Here every problem raises: a missing or unreadable file, and any missing, unexpected or wrongly shaped
tensor, each named.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from huggingface_hub import hf_hub_download, snapshot_download
from huggingface_hub.constants import SAFETENSORS_SINGLE_FILE
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from safetensors.torch import load_file
from torch import Tensor, nn

FAST_TOKENIZER_DIR = "fast_tokenizer"  # copy of the FAST tokenizer inside every saved checkpoint
CHECKPOINT_LAYOUT = (
    "Pass a checkpoint directory (the pretrained_model/ folder holding model.safetensors and config.json, e.g. "
    "outputs/train/<run>/checkpoints/last/pretrained_model) or a hub repo id such as lerobot/pi05_base."
)
HUB_KWARGS = ("force_download", "proxies", "token", "cache_dir", "local_files_only", "revision")


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


def read_weights(source: str | Path, what: str, **hub_kwargs: Any) -> tuple[Path, dict[str, Tensor]]:
    """``model.safetensors`` of a local checkpoint directory or hub id, and its tensors."""
    path = locate_weights(source, what, **hub_kwargs)
    try:
        return path, load_file(str(path))
    except Exception as err:
        raise ValueError(f"could not read the weights in {path} (corrupted or not safetensors): {err}") from err


def load_strictly(module: nn.Module, state: dict[str, Tensor], path: Path, what: str, hint: str) -> None:
    """``module.load_state_dict(state, strict=True)``, after a check that names every mismatched tensor."""
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
    module.load_state_dict(state, strict=True)


def checkpoint_fast_tokenizer_dir(source: str | Path, **hub_kwargs: Any) -> str | None:
    """The FAST tokenizer saved inside a checkpoint (local or hub), or None when it has none."""
    source = str(source)
    if os.path.isdir(source):
        local = Path(source) / FAST_TOKENIZER_DIR
        return str(local) if local.is_dir() else None
    hub = {key: hub_kwargs[key] for key in ("revision", "cache_dir", "token", "local_files_only") if key in hub_kwargs}
    root = Path(snapshot_download(repo_id=source, allow_patterns=[f"{FAST_TOKENIZER_DIR}/*"], **hub))
    return str(root / FAST_TOKENIZER_DIR) if (root / FAST_TOKENIZER_DIR).is_dir() else None


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
