"""Chunk transitions under an inference delay: pi0_fast's prefix conditioning and pi05_ki's RTC, each against the
same checkpoint without them.

Each ``--checkpoints`` entry is a ``pretrained_model`` directory of a split-layout pi0_fast or of a pi05_ki. "with"
is what ``lerobot-rollout --inference.type=rtc`` does with that policy: pi0_fast forces the still-queued actions
that cover the delay as whole FAST sub-chunks (prefix conditioning); pi05_ki guides flow matching toward them
(LeRobot's RTC inpainting, ``max_guidance_weight=10``). "without" decodes the next chunk from the observation
alone, as ``--inference.type=sync`` would if it were equally late. Normalised action space throughout.

1. Continuity, replaying held-out episodes of a LeRobotDataset. Chunk A is predicted at frame ``t``; ``s``
   (``split_every``) steps of it run, then chunk B is requested at frame ``t + s`` while ``d`` more steps of A run
   (the inference delay, 1-3 sub-chunks); B takes over at its step ``d``. Executed: ``A[:s + d]`` then ``B[d:]``,
   and ``A[s:]`` is B's ``prev_chunk_left_over``. Reported: the jump at the boundary ``|B[d] - A[s + d - 1]|`` (L2)
   next to the mean step inside the executed sequence and in the demonstrations, and the second-difference power
   ``|x[i+1] - 2 x[i] + x[i-1]|^2`` at the two steps around the boundary next to its mean elsewhere.
2. Cost per chunk (batch 1, one thread; wall and CPU time, preprocessing included), with pi0_fast's generated and
   forced tokens: forced tokens are fed in the prompt's forward pass, not generated.
3. With ``--episodes_closed_loop=N``: success in the SO-101 simulator (the dataset's ``so101_sim`` settings and
   ``lerobot-eval``'s episodes, seeds from 100000) with the delay simulated in the control loop. Inference runs
   back to back as in ``lerobot-rollout --inference.type=rtc``: the observation is taken when inference starts,
   the robot executes the ``d`` queued actions meanwhile, and the new chunk takes over at its step ``d``, so each
   chunk contributes its steps ``d .. 2d - 1`` (delays up to ``chunk_size / 2``). Also the ideal: no delay,
   replanning every ``n_action_steps``.

Usage (from the repo root; nice it on a shared machine)::

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.pi0_fast_rtc \\
        --checkpoints=outputs/rtc/sim_pi0_fast_s0/checkpoints/001500/pretrained_model,outputs/rtc/sim_pi05_ki_s0/... \\
        --dataset_root=outputs/so101_study/dataset --episodes=90:100 --episodes_closed_loop=100

(docs/pi0_fast_rtc.md has the whole recipe: recording, tokenizer, training.)

Writes ``<name>.json`` and ``<name>.md`` under ``--output_dir`` (default ``outputs/pi0_fast_rtc``).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lerobot.configs.types import FeatureType

from benchmarks.closed_loop.phases import EVAL_SEED
from lerobot_fastplus.evaluation.closed_loop import wilson

MODES = ("without", "with")


def episode_range(text: str) -> list[int]:
    start, stop = (int(part) for part in text.split(":"))
    return list(range(start, stop))


def observation_batch(frames: list[dict[str, Any]]) -> dict[str, Any]:
    """Raw policy input of several dataset frames or environment observations."""
    keys = [key for key in frames[0] if key.startswith("observation.")]
    batch: dict[str, Any] = {key: torch.stack([torch.as_tensor(f[key]) for f in frames]) for key in keys}
    batch["task"] = [f["task"] for f in frames]
    return batch


class Chunker:
    """A checkpoint with its processors, set up as ``lerobot-rollout --inference.type=rtc`` sets it up; a call
    returns normalised chunks ``[B, chunk_size, D]`` from raw observations, with (``leftover`` given) or without
    the RTC arguments."""

    def __init__(self, checkpoint: str, execution_horizon: int | None = None) -> None:
        from lerobot.configs import PreTrainedConfig
        from lerobot.policies.factory import get_policy_class, make_pre_post_processors
        from lerobot.policies.rtc.configuration_rtc import RTCConfig
        from lerobot.utils.import_utils import register_third_party_plugins

        register_third_party_plugins()
        config = PreTrainedConfig.from_pretrained(checkpoint)
        self.kind = config.type
        if self.kind not in ("pi0_fast", "pi05_ki"):
            raise ValueError(f"{checkpoint} is a {self.kind!r} checkpoint; pass pi0_fast or pi05_ki checkpoints.")
        self.policy = get_policy_class(self.kind).from_pretrained(checkpoint).eval()
        self.config = self.policy.config
        horizon = self.config.chunk_size if execution_horizon is None else execution_horizon
        self.config.rtc_config = RTCConfig(enabled=True, execution_horizon=horizon, max_guidance_weight=10.0)
        self.policy.init_rtc_processor()
        self.pre, self.post = make_pre_post_processors(self.config, pretrained_path=checkpoint)

    def __call__(self, raw: dict[str, Any], delay: int = 0, leftover: torch.Tensor | None = None) -> np.ndarray:
        batch = self.pre(raw)
        if leftover is None:
            return self.policy.predict_action_chunk(batch).numpy()
        chunk = self.policy.predict_action_chunk(batch, inference_delay=delay, prev_chunk_left_over=leftover)
        return chunk.detach().numpy()

    def tokens(self) -> tuple[int, int]:
        """Generated and forced tokens of the last batch-1 decode (pi0_fast; ``(0, 0)`` for flow)."""
        report = getattr(self.policy, "last_decode", None)
        if self.kind != "pi0_fast" or report is None:
            return 0, 0
        return int(report.generated[0]), 0 if report.forced is None else int(report.forced[0])


# ---------------------------------------------------------------------------------------------------- continuity
def boundary_metrics(executed: np.ndarray, boundary: int) -> dict[str, np.ndarray]:
    """Per row of ``executed`` ``[N, T, D]``: the jump into step ``boundary`` and the second-difference power at
    the steps on both sides of it, next to the same quantities away from it."""
    steps = np.linalg.norm(np.diff(executed, axis=1), axis=-1)
    power = (np.diff(executed, n=2, axis=1) ** 2).sum(axis=-1)  # index i: centred on step i + 1
    around = [boundary - 2, boundary - 1]  # second differences centred on the last A step and the first B step
    return {
        "jump": steps[:, boundary - 1],
        "step_inside": np.delete(steps, boundary - 1, axis=1).mean(axis=1),
        "d2_boundary": power[:, around].mean(axis=1),
        "d2_inside": np.delete(power, around, axis=1).mean(axis=1),
    }


def held_out_frames(root: str, episodes: list[int]) -> tuple[Any, dict[int, list[dict[str, Any]]]]:
    from lerobot.datasets import LeRobotDataset

    dataset = LeRobotDataset(f"local/{Path(root).name}", root=root, episodes=episodes, video_backend="pyav")
    by_episode: dict[int, list[dict[str, Any]]] = {}
    for i in range(len(dataset)):
        frame = dataset[i]
        by_episode.setdefault(int(frame["episode_index"]), []).append(frame)
    return dataset, by_episode


def continuity(chunker: Chunker, root: str, episodes: list[int], delays: list[int]) -> dict[str, Any]:
    from lerobot.utils.constants import ACTION

    from lerobot_fastplus.data.chunks import action_normalizers, apply_action_step

    every, size = chunker.config.split_every, chunker.config.chunk_size
    dataset, by_episode = held_out_frames(root, episodes)
    pairs = [(ep[t], ep[t + every]) for ep in by_episode.values() for t in range(0, len(ep) - every, 2)]
    torch.manual_seed(0)
    first = chunker(observation_batch([a for a, _ in pairs]))
    raw_second = observation_batch([b for _, b in pairs])
    normalizer, _ = action_normalizers(dataset, chunker.config.normalization_mapping[FeatureType.ACTION.value])
    demos = [apply_action_step(normalizer, np.stack([f[ACTION] for f in ep])) for ep in by_episode.values()]
    result: dict[str, Any] = {
        "boundaries": len(pairs),
        "demo_mean_step": float(np.concatenate([np.linalg.norm(np.diff(d, axis=0), axis=-1) for d in demos]).mean()),
        "demo_d2": float(np.concatenate([(np.diff(d, n=2, axis=0) ** 2).sum(axis=-1) for d in demos]).mean()),
        "delays": {},
    }
    for delay in delays:
        if every + delay > size:
            continue
        leftover = torch.as_tensor(first[:, every:])
        row: dict[str, Any] = {}
        for mode in MODES:
            torch.manual_seed(1)  # the same flow noise with and without RTC
            second = chunker(raw_second, delay, leftover if mode == "with" else None)
            executed = np.concatenate([first[:, : every + delay], second[:, delay:]], axis=1)
            row[mode] = {key: float(value.mean()) for key, value in boundary_metrics(executed, every + delay).items()}
        result["delays"][delay] = row
    return result


# ---------------------------------------------------------------------------------------------------- cost
def cost(chunker: Chunker, root: str, episodes: list[int], delays: list[int], n: int) -> dict[str, Any]:
    _, by_episode = held_out_frames(root, episodes)
    frames = [frame for ep in by_episode.values() for frame in ep]
    every = chunker.config.split_every
    raws = [observation_batch([frames[int(i)]]) for i in np.linspace(0, len(frames) - 1, n).round()]
    leftovers = [torch.as_tensor(chunker(raw)[0, every:]) for raw in raws]
    result = {}
    for label, delay in [("without", 0), *((f"with d={d}", d) for d in delays)]:
        tokens, forced, seconds, cpu = [], [], [], []
        for raw, leftover in zip(raws, leftovers, strict=True):
            start, start_cpu = time.perf_counter(), time.process_time()
            chunker(raw, delay, leftover if delay else None)
            seconds.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
            generated, n_forced = chunker.tokens()
            tokens.append(generated)
            forced.append(n_forced)
        result[label] = {
            "generated_tokens": float(np.mean(tokens)),
            "forced_tokens": float(np.mean(forced)),
            "ms_per_chunk": 1e3 * float(np.median(seconds)),
            "cpu_ms_per_chunk": 1e3 * float(np.median(cpu)),  # robust to a busy machine (one thread)
        }
    return result


# ---------------------------------------------------------------------------------------------------- closed loop
def run_episode(chunker: Chunker, env: Any, seed: int, delay: int, mode: str) -> bool:
    """Whether one episode succeeded at some step (as ``lerobot-eval`` counts it). ``delay`` 0: replan every
    ``n_action_steps`` with no latency, else back-to-back inference with ``delay`` queued steps executed while it
    runs."""
    obs, info = env.reset(seed=seed)
    succeeded = False

    def raw(observation: dict) -> dict[str, Any]:
        frame = {"observation.state": observation["agent_pos"], "task": info["task"]}
        if "environment_state" in observation:
            frame["observation.environment_state"] = observation["environment_state"]
        return observation_batch([frame])

    def act(normalised: np.ndarray) -> tuple[dict, bool]:
        nonlocal succeeded
        action = chunker.post(torch.as_tensor(normalised[None])).numpy().reshape(-1)
        observation, _, terminated, truncated, step_info = env.step(action)
        succeeded |= bool(step_info["is_success"])
        return observation, terminated or truncated

    done = False
    if delay == 0:
        while not done:
            for action in chunker(raw(obs))[0, : chunker.config.n_action_steps]:
                obs, done = act(action)
                if done:
                    break
        return succeeded
    queue = chunker(raw(obs))[0]  # the first chunk: the robot waits for it
    while not done:
        leftover = torch.as_tensor(queue[None]) if mode == "with" else None
        new = chunker(raw(obs), delay, leftover)[0]
        for action in queue[:delay]:  # executed while the next chunk is computed
            obs, done = act(action)
            if done:
                break
        queue = new[delay:]
    return succeeded


def rate(successes: list[bool]) -> dict[str, Any]:
    k, n = int(sum(successes)), len(successes)
    return {"successes": k, "n": n, "rate": k / n, "wilson95": list(wilson(k, n))}


def closed_loop(chunker: Chunker, root: str, delays: list[int], n: int) -> dict[str, Any]:
    from lerobot_fastplus.envs.so101_sim import SO101SimEnv

    settings = json.loads((Path(root) / "meta" / "so101_sim.json").read_text())["env"]
    env = SO101SimEnv(**{k: v for k, v in settings.items() if k != "type"}).make_one()
    seeds = range(EVAL_SEED, EVAL_SEED + n)  # lerobot-eval --seed=EVAL_SEED runs these episodes
    torch.manual_seed(0)
    result: dict[str, Any] = {"no delay": rate([run_episode(chunker, env, s, 0, "without") for s in seeds])}
    for delay in delays:
        if 2 * delay > chunker.config.chunk_size:
            continue
        for mode in MODES:
            torch.manual_seed(0)
            result[f"d={delay} {mode}"] = rate([run_episode(chunker, env, s, delay, mode) for s in seeds])
    return result


# ---------------------------------------------------------------------------------------------------- report
def across_seeds(results: dict[str, dict[str, Any]]) -> list[str]:
    """Per policy type: continuity as mean (standard deviation) over its checkpoints, success pooled over them."""
    lines = ["## Per policy type, over its checkpoints (continuity: mean (sd); success: pooled)", ""]
    lines += ["| type | checkpoints | delay | jump without | jump with | d2 at boundary without | with | d2 inside |"]
    lines += ["|---|---|---|---|---|---|---|---|"]
    kinds = sorted({result["type"] for result in results.values()})

    def spread(values: list[float]) -> str:
        return f"{np.mean(values):.3f} ({np.std(values, ddof=1) if len(values) > 1 else 0.0:.3f})"

    for kind in kinds:
        group = [result for result in results.values() if result["type"] == kind]
        rows = [data["delays"] for result in group for data in result["continuity"].values()]
        for delay in rows[0]:
            cell = {
                (mode, key): spread([row[delay][mode][key] for row in rows])
                for mode in MODES
                for key in ("jump", "d2_boundary", "d2_inside")
            }
            lines.append(
                f"| {kind} | {len(group)} | {delay} | {cell['without', 'jump']} | {cell['with', 'jump']} "
                f"| {cell['without', 'd2_boundary']} | {cell['with', 'd2_boundary']} | {cell['without', 'd2_inside']} |"
            )
    if all("closed_loop" in result for result in results.values()):
        lines += ["", "| type | setting | success (pooled) | rate | interval |", "|---|---|---|---|---|"]
        for kind in kinds:
            group = [result["closed_loop"] for result in results.values() if result["type"] == kind]
            for label in group[0]:
                k, n = sum(g[label]["successes"] for g in group), sum(g[label]["n"] for g in group)
                low, high = wilson(k, n)
                lines.append(f"| {kind} | {label} | {k}/{n} | {k / n:.2f} | [{low:.2f}, {high:.2f}] |")
    return [*lines, ""]


def markdown(results: dict[str, dict[str, Any]]) -> str:
    lines = across_seeds(results) if len(results) > 2 else []
    lines += ["## Continuity at the executed chunk boundary (normalised actions, held-out replay)", ""]
    lines += [
        "| checkpoint | delay | jump without | jump with | step inside | d2 at boundary without | with "
        "| d2 inside | demo step | demo d2 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        for data_name, data in result["continuity"].items():
            for delay, row in data["delays"].items():
                lines.append(
                    f"| {name} ({data_name}) | {delay} | {row['without']['jump']:.3f} | {row['with']['jump']:.3f} "
                    f"| {row['without']['step_inside']:.3f} | {row['without']['d2_boundary']:.4f} "
                    f"| {row['with']['d2_boundary']:.4f} | {row['without']['d2_inside']:.4f} "
                    f"| {data['demo_mean_step']:.3f} | {data['demo_d2']:.4f} |"
                )
    lines += ["", "## Cost per chunk (batch 1, one thread, median)", ""]
    lines += ["| checkpoint | setting | generated tokens | forced tokens | ms | CPU ms |", "|---|---|---|---|---|---|"]
    for name, result in results.items():
        for label, row in result["cost"].items():
            lines.append(
                f"| {name} | {label} | {row['generated_tokens']:.1f} | {row['forced_tokens']:.1f} "
                f"| {row['ms_per_chunk']:.0f} | {row['cpu_ms_per_chunk']:.0f} |"
            )
    if any("closed_loop" in result for result in results.values()):
        lines += ["", "## Closed loop in the simulator, delay simulated (success, Wilson 95%)", ""]
        lines += ["| checkpoint | setting | success | rate | interval |", "|---|---|---|---|---|"]
        for name, result in results.items():
            for label, row in result.get("closed_loop", {}).items():
                low, high = row["wilson95"]
                lines.append(
                    f"| {name} | {label} | {row['successes']}/{row['n']} | {row['rate']:.2f} "
                    f"| [{low:.2f}, {high:.2f}] |"
                )
    return "\n".join(lines) + "\n"


def run_name(checkpoint: str) -> str:
    """``<run>/checkpoints/<step>/pretrained_model`` -> ``<run>@<step>`` (no machine-specific path)."""
    parts = Path(checkpoint).resolve().parts
    if len(parts) >= 4 and parts[-3] == "checkpoints":
        return f"{parts[-4]}@{parts[-2]}"
    return Path(checkpoint).name


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", required=True, help="pretrained_model directories, comma-separated")
    parser.add_argument("--dataset_root", required=True, help="LeRobotDataset with the held-out episodes")
    parser.add_argument("--episodes", default="90:100", help="held-out episodes, start:stop")
    parser.add_argument("--delays", default=None, help="delays in steps, comma-separated (default: 1-3 sub-chunks)")
    parser.add_argument("--latency_chunks", type=int, default=20, help="chunks timed per setting")
    parser.add_argument("--episodes_closed_loop", type=int, default=0, help="simulator episodes per setting (0: skip)")
    parser.add_argument(
        "--execution_horizon",
        type=int,
        default=None,
        help="--inference.rtc.execution_horizon (default: chunk_size): pi05_ki's guidance fades to 0 there; pi0_fast "
        "forces at most that many steps",
    )
    parser.add_argument("--name", default="pi0_fast_rtc", help="file name of the results")
    parser.add_argument("--output_dir", default="outputs/pi0_fast_rtc")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    logging.getLogger("lerobot_fastplus").setLevel(logging.ERROR)
    data_name = Path(args.dataset_root).name
    results: dict[str, dict[str, Any]] = {}
    for checkpoint in args.checkpoints.split(","):
        chunker = Chunker(checkpoint, args.execution_horizon)
        every = chunker.config.split_every
        delays = [int(d) for d in args.delays.split(",")] if args.delays else [every, 2 * every, 3 * every]
        episodes = episode_range(args.episodes)
        name = run_name(checkpoint)
        result: dict[str, Any] = {
            "type": chunker.kind,
            "chunk_size": chunker.config.chunk_size,
            "split_every": every,
            "execution_horizon": chunker.config.rtc_config.execution_horizon,
            "episodes": args.episodes,
            "continuity": {data_name: continuity(chunker, args.dataset_root, episodes, delays)},
            "cost": cost(chunker, args.dataset_root, episodes, delays, args.latency_chunks),
        }
        if args.episodes_closed_loop:
            result["closed_loop"] = closed_loop(chunker, args.dataset_root, delays, args.episodes_closed_loop)
        results[name] = result
        print(markdown({name: result}), flush=True)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(results, indent=2))
    (out / f"{args.name}.md").write_text(markdown(results))
    print(f"wrote {out / args.name}.json and .md")


if __name__ == "__main__":
    main()
