"""LeRobot's ``lerobot-train`` entry point, unchanged, plus a per-rank record for the DDP test.

Launched by ``accelerate launch ... tests/ddp_probe.py <lerobot-train flags>``. It runs
``lerobot.scripts.lerobot_train.main()`` with LeRobot's own Accelerator construction (``find_unused_parameters=True``),
and only observes: each rank writes ``rank<i>.json`` into ``$FASTPLUS_DDP_REPORT_DIR`` with a SHA-256 digest of every
policy parameter right after ``accelerator.prepare`` and at the end of training, the dataset indices it trained on,
the steps at which it wrote a checkpoint, and how DDP was set up. With ``FASTPLUS_DDP_FIND_UNUSED=0`` the DDP
wrapper is built with ``find_unused_parameters=False`` instead, so any parameter left out of the loss's autograd
graph makes DDP raise on the next step.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import accelerate
import torch
from accelerate.utils import DistributedDataParallelKwargs
from lerobot.scripts import lerobot_train

REPORT_DIR_ENV = "FASTPLUS_DDP_REPORT_DIR"
FIND_UNUSED_ENV = "FASTPLUS_DDP_FIND_UNUSED"
REPORT: dict[str, Any] = {"batches": [], "saves": []}


def digests(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> dict[str, str]:
    """SHA-256 of the raw bytes of each tensor, by name (exact: one flipped bit changes it)."""
    return {
        name: hashlib.sha256(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy()).hexdigest()
        for name, tensor in named_tensors
    }


class ProbeAccelerator(accelerate.Accelerator):
    """LeRobot's Accelerator, recording what the DDP test checks."""

    def __init__(self, *args: Any, kwargs_handlers: list | None = None, **kwargs: Any) -> None:
        if os.environ.get(FIND_UNUSED_ENV) == "0":
            kwargs_handlers = [h for h in kwargs_handlers or [] if not isinstance(h, DistributedDataParallelKwargs)]
            kwargs_handlers.append(DistributedDataParallelKwargs(find_unused_parameters=False))
        super().__init__(*args, kwargs_handlers=kwargs_handlers, **kwargs)
        REPORT.update(
            rank=self.process_index,
            world_size=self.num_processes,
            distributed_type=str(self.distributed_type),
            backend=self.state.backend,
        )

    def prepare(self, *args: Any, **kwargs: Any) -> Any:
        prepared = super().prepare(*args, **kwargs)
        self.probed = next(obj for obj in prepared if isinstance(obj, torch.nn.Module))  # LeRobot's policy, wrapped
        policy = self.unwrap_model(self.probed)
        REPORT["wrapper"] = type(self.probed).__name__
        REPORT["find_unused_parameters"] = getattr(self.probed, "find_unused_parameters", None)
        REPORT["prepared"] = digests(policy.named_parameters())
        REPORT["trainable"] = [name for name, param in policy.named_parameters() if param.requires_grad]
        return prepared

    def end_training(self) -> None:
        REPORT["final"] = digests(self.unwrap_model(self.probed).named_parameters())
        out = Path(os.environ[REPORT_DIR_ENV]) / f"rank{self.process_index}.json"
        out.write_text(json.dumps(REPORT))
        super().end_training()


def recording_update_policy(train_metrics: Any, policy: Any, batch: dict, *args: Any, **kwargs: Any) -> Any:
    REPORT["batches"].append(batch["index"].tolist())
    return UPDATE_POLICY(train_metrics, policy, batch, *args, **kwargs)


def recording_save_checkpoint(*args: Any, **kwargs: Any) -> None:
    REPORT["saves"].append(kwargs["step"])
    SAVE_CHECKPOINT(*args, **kwargs)


UPDATE_POLICY, SAVE_CHECKPOINT = lerobot_train.update_policy, lerobot_train.save_checkpoint

if __name__ == "__main__":
    accelerate.Accelerator = ProbeAccelerator  # lerobot_train.train() imports it from `accelerate` when called
    lerobot_train.update_policy = recording_update_policy
    lerobot_train.save_checkpoint = recording_save_checkpoint
    lerobot_train.main()
