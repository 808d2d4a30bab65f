"""Policy latency per chunk: wall time of one ``predict_action_chunk`` on one simulator observation (batch 1), the
time a robot waits for a new chunk. Run as a module so that the study's own process never imports torch:

    python -m benchmarks.closed_loop.latency <pretrained_model> <task> [--policy.<field>=<value> ...]

prints one JSON object (median and 90th percentile in ms over ``REPEATS`` calls after ``WARMUP``, torch threads).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

WARMUP, REPEATS = 3, 20
EVAL_SEED = 100_000


def _coerce(current: Any, value: str) -> Any:
    """A command-line value in the type of the config field it replaces."""
    if isinstance(current, bool):
        return value.lower() == "true"
    return type(current)(value) if current is not None else value


def measure(checkpoint: Path, task: str, flags: list[str]) -> dict[str, float | int]:
    import torch
    from lerobot.configs import PreTrainedConfig
    from lerobot.envs.utils import preprocess_observation
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
    preprocess, _ = make_pre_post_processors(cfg, pretrained_path=checkpoint)
    env = env_cfg.make_one()
    obs, info = env.reset(seed=EVAL_SEED)
    batch = preprocess_observation({k: v[None] if isinstance(v, np.ndarray) else v for k, v in obs.items()})
    batch = preprocess({**batch, "task": [info["task"]]})
    seconds = []
    with torch.inference_mode():
        for _ in range(WARMUP + REPEATS):
            start = time.perf_counter()
            policy.predict_action_chunk(batch)
            seconds.append(time.perf_counter() - start)
    timed = np.asarray(seconds[WARMUP:]) * 1000
    return {
        "ms_median": float(statistics.median(timed)),
        "ms_p90": float(np.percentile(timed, 90)),
        "torch_threads": torch.get_num_threads(),
    }


if __name__ == "__main__":
    print(json.dumps(measure(Path(sys.argv[1]), sys.argv[2], sys.argv[3:])))
