"""Where pick-and-place episodes fail: the phases a checkpoint (or the scripted expert) gets through, per episode.

    python -m benchmarks.closed_loop.phases <pretrained_model | expert> [--episodes=50] [--policy.<field>=<value> ...]

Phases, each counted when it happened at any step of the episode: ``reached`` (grasp point within 2 cm of the
cube), ``closed near`` (gripper commanded closed there), ``carried`` (the cube lifted as the simulator's success
test requires), ``at goal`` (carried cube within the success distance of the goal), ``opened at goal`` (gripper
commanded open there), ``success`` (the simulator's own test: carried, at the goal, jaw open, cube at rest); and
the closest the grasp point came to the cube (in 3-D and in the table plane). Episodes are the evaluation's: seeds
from 100000. Prints one JSON object (rates, medians and per-episode rows).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

EVAL_SEED = 100_000
REACHED_M = 0.02
PHASES = ("reached", "closed near", "carried", "at goal", "opened at goal", "success")


def run_episode(env, act, seed: int) -> dict[str, bool | int]:
    from lerobot_env_so101.pick_place_env import PLACE_SUCCESS_DISTANCE

    sim = env.env.unwrapped
    obs, info = env.reset(seed=seed)
    seen = dict.fromkeys(PHASES, False)
    closest = closest_xy = np.inf
    steps = 0
    for steps in range(1, env._max_episode_steps + 1):  # noqa: B007 (the count is reported)
        action = act(obs, info)
        offset = env.block_pos - env.grasp_pos
        closest, closest_xy = min(closest, np.linalg.norm(offset)), min(closest_xy, np.linalg.norm(offset[:2]))
        near = np.linalg.norm(offset) < REACHED_M
        seen["reached"] |= bool(near)
        seen["closed near"] |= bool(near and action[3] < 0.5)
        obs, _, terminated, truncated, info = env.step(action)
        seen["carried"] |= bool(sim._was_carried)
        at_goal = sim._was_carried and np.linalg.norm(env.block_pos[:2] - env.goal_pos[:2]) < PLACE_SUCCESS_DISTANCE
        seen["at goal"] |= bool(at_goal)
        seen["opened at goal"] |= bool(at_goal and action[3] > 0.5)
        seen["success"] |= bool(info["is_success"])
        if terminated or truncated:
            break
    return {**seen, "steps": steps, "seed": seed, "closest_cm": 100 * closest, "closest_xy_cm": 100 * closest_xy}


def main(argv: list[str]) -> dict:
    source = argv[0]
    episodes = next((int(a.split("=", 1)[1]) for a in argv[1:] if a.startswith("--episodes=")), 50)
    flags = [a for a in argv[1:] if a.startswith("--policy.")]
    if source == "expert":
        from lerobot_fastplus.envs.so101_recording import SO101Expert
        from lerobot_fastplus.envs.so101_sim import SO101SimEnv

        env_cfg = SO101SimEnv(task="pick_place")
        expert = SO101Expert("pick_place", env_cfg.action_scale)

        def act(obs: dict, info: dict) -> np.ndarray:
            return expert.act(obs["agent_pos"].astype(np.float64))

        def reset() -> None:
            expert.reset()
    else:
        import torch

        from benchmarks.closed_loop.sim_policy import SimPolicy

        torch.manual_seed(0)  # flow sampling's noise: the same numbers on every run
        sim = SimPolicy.load(Path(source), "pick_place", flags)
        env_cfg, act, reset = sim.env_cfg, sim.act, sim.policy.reset
    env = env_cfg.make_one()
    rows = []
    for seed in range(EVAL_SEED, EVAL_SEED + episodes):
        reset()
        rows.append(run_episode(env, act, seed))
    rates = {phase: float(np.mean([row[phase] for row in rows])) for phase in PHASES}
    closest = {key: float(np.median([row[key] for row in rows])) for key in ("closest_cm", "closest_xy_cm")}
    return {"source": source, "flags": flags, "episodes": episodes, "rates": rates, "median": closest, "rows": rows}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
