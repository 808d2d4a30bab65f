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
from safetensors.torch import load_file
from torch import Tensor, nn

FAST_TOKENIZER_DIR = "fast_tokenizer"  # copy of the FAST tokenizer inside every saved checkpoint
HUB_KWARGS = ("force_download", "proxies", "token", "cache_dir", "local_files_only", "revision")


def read_weights(source: str | Path, what: str, **hub_kwargs: Any) -> tuple[Path, dict[str, Tensor]]:
    """``model.safetensors`` of a local checkpoint directory or hub id, and its tensors."""
    source = str(source)
    if os.path.isdir(source):
        path = Path(source) / SAFETENSORS_SINGLE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: {source} is not a {what} checkpoint directory.")
    else:
        path = Path(hf_hub_download(repo_id=source, filename=SAFETENSORS_SINGLE_FILE, **hub_kwargs))
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


def _listing(what: str, keys: list[str], limit: int = 8) -> str:
    if not keys:
        return ""
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"{len(keys)} {what} ({', '.join(keys[:limit])}{more}); "
