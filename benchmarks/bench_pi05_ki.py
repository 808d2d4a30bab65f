"""pi05_ki vs LeRobot's core pi05 at the tiny variant on CPU: training step time, peak memory, sampling latency.

Same config, same weights, same preprocessed batch, one process; the two policies are timed in interleaved
rounds and each number is the median over rounds of per-round medians. Training step = forward + backward + grad clip
+ AdamW; peak memory = increase of the peak RSS over the timed training loop (Linux). Sampling = pi05 flow
sampling (10 Euler steps, batch 1) through ``predict_action_chunk``. Prints a table; writes nothing.

    HF_HUB_OFFLINE=1 python benchmarks/bench_pi05_ki.py [--batch 8] [--chunk 50] [--dim 7] [--rounds 3]
        [--image-size 64] [--cameras 2] [--prompt-len 48] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.policies.pi05 import PI05Config
from lerobot.policies.pretrained import PreTrainedPolicy

from lerobot_fastplus.fast import FastTokenizer
from lerobot_fastplus.policies.common import write_paligemma_layout_tokenizer
from lerobot_fastplus.policies.common.core_tiny import core_pi05_tiny
from lerobot_fastplus.policies.pi05_ki.configuration_pi05_ki import PI05KIConfig
from lerobot_fastplus.policies.pi05_ki.modeling_pi05_ki import PI05KIPolicy
from lerobot_fastplus.policies.pi05_ki.processor_pi05_ki import make_pi05_ki_pre_post_processors

TASK = "pick up the red cube on the left and place it into the bowl"


def smooth_chunks(n: int, horizon: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    walk = np.cumsum(rng.normal(0, 0.04, (n, horizon, dim)), axis=1) + rng.uniform(-0.5, 0.5, (n, 1, dim))
    return np.clip(walk, -1, 1)


def features(config: PI05Config, dim: int, res: int, cameras: int) -> None:
    config.input_features = {
        f"observation.images.cam{i}": PolicyFeature(FeatureType.VISUAL, (3, res, res)) for i in range(cameras)
    }
    config.input_features["observation.state"] = PolicyFeature(FeatureType.STATE, (dim,))
    config.output_features = {"action": PolicyFeature(FeatureType.ACTION, (dim,))}


def peak_rss_mib() -> float | None:
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except OSError:
        return None


def reset_peak_rss() -> float | None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return peak_rss_mib()


def timed(fn: Callable[[], object], warmup: int, repeats: int) -> tuple[float, float | None]:
    """Median seconds per call after ``warmup`` calls, and the peak-RSS increase (MiB) while timing."""
    for _ in range(warmup):
        fn()
    base = reset_peak_rss()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    peak = peak_rss_mib()
    return statistics.median(times), (peak - base if base is not None and peak is not None else None)


def train_step(policy: PreTrainedPolicy, batch: dict) -> Callable[[], None]:
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-5, weight_decay=0.01)

    def step() -> None:
        policy.train()
        loss, _ = policy.forward(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    defaults = {"--batch": 8, "--chunk": 50, "--dim": 7, "--repeats": 5, "--warmup": 1, "--rounds": 3,
                "--prompt-len": 48, "--threads": 2, "--image-size": 64, "--cameras": 2}  # fmt: skip
    for flag, default in defaults.items():
        parser.add_argument(flag, type=int, default=default)
    args = parser.parse_args()
    res, cameras = args.image_size, args.cameras
    load_before = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    chunks = smooth_chunks(2000, args.chunk, args.dim, rng)
    ones = np.ones(args.dim, dtype=np.float32)
    stat = {"q01": -ones, "q99": ones, "mean": 0 * ones, "std": ones, "min": -ones, "max": ones}
    stats = {key: {k: torch.tensor(v) for k, v in stat.items()} for key in ("action", "observation.state")}

    with tempfile.TemporaryDirectory(prefix="bench_pi05_ki_") as tmp:
        fast_dir = FastTokenizer.fit(chunks[200:].reshape(-1, 10, args.dim), vocab_size=1024).save(Path(tmp) / "fast")
        text_dir = write_paligemma_layout_tokenizer(Path(tmp) / "text", TASK.split())
        common = {"device": "cpu", "chunk_size": args.chunk, "n_action_steps": args.chunk,
                  "image_resolution": (res, res), "tokenizer_max_length": args.prompt_len}  # fmt: skip
        ki_config = PI05KIConfig(**common, paligemma_variant="gemma_tiny", action_expert_variant="gemma_tiny",
                                 text_tokenizer_name=str(text_dir), fast_tokenizer_path=str(fast_dir))  # fmt: skip
        core_config = PI05Config(**common)
        features(ki_config, args.dim, res, cameras)
        features(core_config, args.dim, res, cameras)
        torch.manual_seed(0)
        ki = PI05KIPolicy(ki_config)
        core = core_pi05_tiny(core_config)
        core.load_state_dict(ki.state_dict())
        pre, _ = make_pi05_ki_pre_post_processors(ki_config, stats)

        def raw(lo: int, n: int, with_action: bool) -> dict:
            batch = {f"observation.images.cam{i}": torch.rand(n, 3, res, res) for i in range(cameras)}
            batch.update({"observation.state": torch.tensor(chunks[lo : lo + n, 0], dtype=torch.float32),
                          "task": [TASK] * n})  # fmt: skip
            if with_action:
                batch["action"] = torch.tensor(chunks[lo : lo + n], dtype=torch.float32)
                batch["action_is_pad"] = torch.zeros(n, args.chunk, dtype=torch.bool)
            return batch

        batch = pre(raw(0, args.batch, True))  # one batch for both; core pi05 ignores the FAST keys
        obs = pre(raw(100, 1, False))
        steps = {"pi05 (core)": train_step(core, batch), "pi05_ki": train_step(ki, batch)}
        policies = {"pi05 (core)": core, "pi05_ki": ki}
        train = {name: [] for name in policies}
        peak = {name: [] for name in policies}
        sample = {name: [] for name in policies}
        for _ in range(args.rounds):  # interleaved, so drifting machine load hits both alike
            for name, policy in policies.items():
                seconds, rss = timed(steps[name], args.warmup, args.repeats)
                train[name].append(seconds)
                peak[name].append(rss)
                policy.eval()
                sample[name].append(timed(lambda p=policy: p.predict_action_chunk(obs), args.warmup, args.repeats)[0])
        results = {
            name: (
                statistics.median(train[name]),
                max(peak[name], key=lambda v: v or 0),
                statistics.median(sample[name]),
            )
            for name in policies
        }

    fast_tokens = batch["fastplus.action_token_valid"].sum(1).float().mean().item()
    print(f"\ntiny variant, CPU x{torch.get_num_threads()}, batch {args.batch}, chunk {args.chunk}, action dim "
          f"{args.dim}, {cameras} cameras {res}x{res}, prompt {args.prompt_len} tokens, FAST layout "
          f"{fast_tokens:.1f} tokens/chunk; median over {args.rounds} interleaved rounds of {args.repeats} "
          f"(+{args.warmup} warm-up); 1-min load average {load_before:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after")  # fmt: skip
    print(f"{'policy':<14}{'train step s':>14}{'peak RSS +MiB':>15}{'sample s (B=1)':>16}")
    for name, (train_s, rss, sample_s) in results.items():
        print(f"{name:<14}{train_s:>14.4f}{(rss if rss is not None else float('nan')):>15.0f}{sample_s:>16.4f}")
    (base_train, base_peak, base_sample), (ki_train, ki_peak, ki_sample) = results["pi05 (core)"], results["pi05_ki"]
    print(f"pi05_ki / pi05: train step {ki_train / base_train:.2f}x (target <= 1.15x), sampling "
          f"{ki_sample / base_sample:.2f}x (target ~1.00x)"
          + (f", peak memory {ki_peak / base_peak:.2f}x" if base_peak and ki_peak else ""))  # fmt: skip


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
