"""Building the pi0-family models in their target dtype, or with empty parameters that a checkpoint then fills.

LeRobot's pi05 / pi0_fast build every tensor in fp32 and then cast (``to_bfloat16_for_selected_params``): at the
published size that holds ~17 GiB of host memory per process for 9.35 GB of bf16 weights, and every DDP rank pays
it at once. Here the plugin's models are built

* under ``build_dtype(config.dtype)``: Hugging Face's modules are created and randomly initialised (with their own
  init scheme) directly in the target dtype, then core's ``to_bfloat16_for_selected_params`` upcasts, one tensor
  at a time, what pi05 keeps in fp32 (vision tower, projector, norms);
* and, when a checkpoint will overwrite every weight anyway (``init_from``, ``from_pretrained``), inside
  ``parameters_on_meta()``: parameters are created on the meta device (no memory, no initialisation), while
  buffers are created for real as usual, so the non-persistent ones (rotary ``inv_freq``, SigLIP position ids,
  the FAST id maps) have their values without being rebuilt. ``checkpoint.load_strictly`` then allocates each
  parameter in its final dtype and device and streams the checkpoint into it; ``require_materialized`` checks
  that nothing was left on the meta device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager

import torch
from accelerate import init_empty_weights
from torch import nn


@contextlib.contextmanager
def build_dtype(dtype: str) -> Iterator[None]:
    """Make ``dtype`` (``"bfloat16"`` or ``"float32"``) torch's default floating dtype while the block runs."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def parameters_on_meta(enabled: bool = True) -> AbstractContextManager:
    """Create the parameters of modules built in the block on the meta device (buffers stay real), if ``enabled``."""
    return init_empty_weights(include_buffers=False) if enabled else contextlib.nullcontext()


def require_materialized(module: nn.Module, what: str) -> None:
    """Raise if a parameter or buffer of ``module`` is still on the meta device (it would hold no values)."""
    left = [name for name, t in (*module.named_parameters(), *module.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"{what}: {len(left)} tensors were never filled: {', '.join(left[:8])}")
