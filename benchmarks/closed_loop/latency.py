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

import numpy as np

WARMUP, REPEATS = 3, 20
EVAL_SEED = 100_000


def measure(checkpoint: Path, task: str, flags: list[str]) -> dict[str, float | int]:
    import torch

    from benchmarks.closed_loop.sim_policy import SimPolicy

    sim = SimPolicy.load(checkpoint, task, flags)
    obs, info = sim.env_cfg.make_one().reset(seed=EVAL_SEED)
    batch = sim.batch(obs, info)
    seconds = []
    with torch.inference_mode():
        for _ in range(WARMUP + REPEATS):
            start = time.perf_counter()
            sim.policy.predict_action_chunk(batch)
            seconds.append(time.perf_counter() - start)
    timed = np.asarray(seconds[WARMUP:]) * 1000
    return {
        "ms_median": float(statistics.median(timed)),
        "ms_p90": float(np.percentile(timed, 90)),
        "torch_threads": torch.get_num_threads(),
    }


if __name__ == "__main__":
    print(json.dumps(measure(Path(sys.argv[1]), sys.argv[2], sys.argv[3:])))
