"""A checkpoint loaded the way ``lerobot-eval`` loads it, acting in one ``so101_sim`` env in this process (for the
study's measurements that ``lerobot-eval`` does not make: latency, where episodes fail)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


def _coerce(current: Any, value: str) -> Any:
    """A command-line value in the type of the config field it replaces."""
    if isinstance(current, bool):
        return value.lower() == "true"
    return type(current)(value) if current is not None else value


@dataclass
class SimPolicy:
    policy: Any
    preprocess: Any
    postprocess: Any
    env_cfg: Any

    @classmethod
    def load(cls, checkpoint: Path, task: str, flags: list[str]) -> SimPolicy:
        """``flags``: ``--policy.<field>=<value>`` overrides of the checkpoint's config."""
        from lerobot.configs import PreTrainedConfig
        from lerobot.policies.factory import make_policy, make_pre_post_processors
        from lerobot.utils.import_utils import register_third_party_plugins

        register_third_party_plugins()
        from lerobot_fastplus.envs.so101_sim import SO101SimEnv

        env_cfg = SO101SimEnv(task=task)
        cfg = PreTrainedConfig.from_pretrained(checkpoint)
        cfg.pretrained_path = checkpoint
        for flag in flags:
            name, value = flag.removeprefix("--policy.").split("=", 1)
            setattr(cfg, name, _coerce(getattr(cfg, name), value))
        policy = make_policy(cfg, env_cfg=env_cfg).eval()
        preprocess, postprocess = make_pre_post_processors(cfg, pretrained_path=checkpoint)
        return cls(policy, preprocess, postprocess, env_cfg)

    def batch(self, obs: dict, info: dict) -> dict:
        """One env observation as the policy's preprocessed batch of 1."""
        from lerobot.envs.utils import preprocess_observation

        batch = preprocess_observation({k: v[None] if isinstance(v, np.ndarray) else v for k, v in obs.items()})
        return self.preprocess({**batch, "task": [info["task"]]})

    def act(self, obs: dict, info: dict) -> np.ndarray:
        """The next action, through the policy's action queue (``select_action``), as ``lerobot-eval`` steps."""
        import torch

        with torch.inference_mode():
            return self.postprocess(self.policy.select_action(self.batch(obs, info)))[0].numpy()
