"""pi05_ki vs LeRobot's core pi05 (and the plugin's pi0_fast) at the tiny variant on CPU: training step time, peak
memory, sampling latency, and the FLOP-count floor of the training-step ratio.

Same config, same weights (pi05 / pi05_ki), same preprocessed batch, one process; the policies are timed in
interleaved rounds and each number is the median over rounds of per-round medians. Training step = forward + backward
+ grad clip + AdamW; peak memory = increase of the peak RSS over the timed training loop (Linux). Sampling = pi05 flow
sampling (10 Euler steps, batch 1) through ``predict_action_chunk``. Also trained on the same batch:

* pi05_ki with its FAST tokens removed from the batch (the KI machinery alone: what pi05_ki costs beyond pi05 without
  the FAST tokens' own work);
* the plugin's pi0_fast (same tiny backbone, split layout, same FAST targets; no action expert).

FLOP-count floor of pi05_ki / pi05 = (pi05 step FLOPs + the FAST tokens' FLOPs) / pi05 step FLOPs, where a step's
FLOPs are those of forward + backward as ``torch.utils.flop_counter.FlopCounterMode`` counts them (matrix products,
convolutions, attention) on the actual shapes, and the FAST tokens' FLOPs are pi05_ki's minus pi05_ki's without FAST
tokens (their backbone layers and attention, the LM-head slice) plus their cross-entropy (``CE_FLOPS_PER_LOGIT``).
Elementwise work (norms, activations, AdamW over the 257k x width embedding) is not counted, on either side.

``--case realistic``: pi0.5's sequence layout at the tiny width: two cameras of 256 image tokens each (256x256 images,
the tiny SigLIP's 16 px patches), a 200-token prompt and about 60 FAST tokens per chunk. Prints a table; writes nothing.

    HF_HUB_OFFLINE=1 python benchmarks/bench_pi05_ki.py [--case tiny|realistic] [--batch 8] [--chunk 50] [--dim 7]
        [--rounds 3] [--image-size N] [--cameras 2] [--prompt-len N] [--action-step STD] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.policies.pi05 import PI05Config
from lerobot.policies.pretrained import PreTrainedPolicy
from torch.utils import flop_counter

from lerobot_fastplus.fast import FastTokenizer
from lerobot_fastplus.fast_action_step import ACTION_TOKEN_TARGET_KEY, ACTION_TOKEN_VALID_KEY, ACTION_TOKENS_KEY
from lerobot_fastplus.policies.common import write_paligemma_layout_tokenizer
from lerobot_fastplus.policies.pi0_fast.configuration_pi0_fast import PI0FastConfig
from lerobot_fastplus.policies.pi0_fast.modeling_pi0_fast import PI0FastPolicy
from lerobot_fastplus.policies.pi05_ki.configuration_pi05_ki import PI05KIConfig
from lerobot_fastplus.policies.pi05_ki.modeling_pi05_ki import PI05KIPolicy
from lerobot_fastplus.policies.pi05_ki.processor_pi05_ki import make_pi05_ki_pre_post_processors

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: testing_support
from testing_support.core_tiny import core_pi05_tiny

TASK = "pick up the red cube on the left and place it into the bowl"
FAST_KEYS = (ACTION_TOKENS_KEY, ACTION_TOKEN_VALID_KEY, ACTION_TOKEN_TARGET_KEY)
# Per-case defaults; --action-step (std of the random walk's steps) sets how many FAST tokens a chunk takes.
CASES = {
    "tiny": {"image_size": 64, "prompt_len": 48, "action_step": 0.04},  # ~98 FAST tokens per 50-step 7-D chunk
    "realistic": {"image_size": 256, "prompt_len": 200, "action_step": 0.026},  # 2 x 256 image tokens, ~60 FAST
}
# Cross-entropy per logit: log-softmax forward (max, subtract, exp, sum, subtract log) and backward (exp, subtract
# the one-hot, scale), as FLOPs; FlopCounterMode counts no elementwise work.
CE_FLOPS_PER_LOGIT = 8
ATEN = torch.ops.aten


def smooth_chunks(n: int, horizon: int, dim: int, rng: np.random.Generator, step: float = 0.04) -> np.ndarray:
    walk = np.cumsum(rng.normal(0, step, (n, horizon, dim)), axis=1) + rng.uniform(-0.5, 0.5, (n, 1, dim))
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


def _all_heads(shape: torch.Size, heads: int) -> tuple[int, ...]:
    return (shape[0], heads, *shape[2:])  # grouped K/V heads count once per query head


def _cpu_flash_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query, _all_heads(key, query[1]), _all_heads(value, query[1]))


def _cpu_flash_backward_flops(grad, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_backward_flop_count(grad, query, _all_heads(key, query[1]), _all_heads(value, query[1]))


def step_flops(policy: PreTrainedPolicy, batch: dict) -> int:
    """FLOPs of one training forward + backward as FlopCounterMode counts them; PyTorch's CPU flash attention, which
    it does not know, is counted like the CUDA kernels (grouped K/V heads once per query head)."""
    cpu_flash = {
        ATEN._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_flops,
        ATEN._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_backward_flops,
    }
    policy.train()
    with flop_counter.FlopCounterMode(display=False, custom_mapping=cpu_flash) as counter:
        loss, _ = policy.forward(batch)
        loss.backward()
    policy.zero_grad(set_to_none=True)
    return counter.get_total_flops()


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
                "--threads": 2, "--cameras": 2}  # fmt: skip
    for flag, default in defaults.items():
        parser.add_argument(flag, type=int, default=default)
    parser.add_argument("--case", choices=sorted(CASES), default="tiny")
    parser.add_argument("--image-size", type=int, help="default: the case's")
    parser.add_argument("--prompt-len", type=int, help="default: the case's")
    parser.add_argument("--action-step", type=float, help="std of the synthetic actions' steps (default: the case's)")
    args = parser.parse_args()
    for key, value in CASES[args.case].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    res, cameras = args.image_size, args.cameras
    load_before = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    chunks = smooth_chunks(2000, args.chunk, args.dim, rng, args.action_step)
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
        fast_config = PI0FastConfig(**common, paligemma_variant="gemma_tiny", text_tokenizer_name=str(text_dir),
                                    action_tokenizer_name=str(fast_dir))  # fmt: skip
        for config in (ki_config, core_config, fast_config):
            features(config, args.dim, res, cameras)
        torch.manual_seed(0)
        ki = PI05KIPolicy(ki_config)
        core = core_pi05_tiny(core_config)
        core.load_state_dict(ki.state_dict())
        pi0_fast = PI0FastPolicy(fast_config)
        pre, _ = make_pi05_ki_pre_post_processors(ki_config, stats)

        def raw(lo: int, n: int, with_action: bool) -> dict:
            batch = {f"observation.images.cam{i}": torch.rand(n, 3, res, res) for i in range(cameras)}
            batch.update({"observation.state": torch.tensor(chunks[lo : lo + n, 0], dtype=torch.float32),
                          "task": [TASK] * n})  # fmt: skip
            if with_action:
                batch["action"] = torch.tensor(chunks[lo : lo + n], dtype=torch.float32)
                batch["action_is_pad"] = torch.zeros(n, args.chunk, dtype=torch.bool)
            return batch

        # one batch for all; core pi05 ignores the FAST keys, pi0_fast reads the same prompt and FAST targets
        batch = pre(raw(0, args.batch, True))
        no_fast = {**batch, **{key: batch[key][:, :0] for key in FAST_KEYS}}
        obs = pre(raw(100, 1, False))
        trained = {
            "pi05 (core)": (core, batch),
            "pi05_ki": (ki, batch),
            "pi05_ki no FAST": (ki, no_fast),
            "pi0_fast": (pi0_fast, batch),
        }
        sampled = {"pi05 (core)": core, "pi05_ki": ki}
        flops = {name: step_flops(policy, data) for name, (policy, data) in trained.items()}
        steps = {name: train_step(policy, data) for name, (policy, data) in trained.items()}
        train = {name: [] for name in trained}
        peak = {name: [] for name in trained}
        sample = {name: [] for name in sampled}
        disagreement: list[float] = []  # pi05_ki sampling with report_disagreement (flow + one FAST decode)
        for _ in range(args.rounds):  # interleaved, so drifting machine load hits all alike
            for name in trained:
                seconds, rss = timed(steps[name], args.warmup, args.repeats)
                train[name].append(seconds)
                peak[name].append(rss)
                if name in sampled:
                    policy = sampled[name]
                    policy.eval()
                    sample[name].append(
                        timed(lambda p=policy: p.predict_action_chunk(obs), args.warmup, args.repeats)[0]
                    )
                    if policy is ki:
                        ki.config.report_disagreement = True
                        disagreement.append(timed(lambda: ki.predict_action_chunk(obs), args.warmup, args.repeats)[0])
                        ki.config.report_disagreement = False

    fast_tokens = batch[ACTION_TOKEN_VALID_KEY].sum(1).float().mean().item()
    n_targets = int(batch[ACTION_TOKEN_TARGET_KEY][:, 1:].sum())
    ce_flops = CE_FLOPS_PER_LOGIT * n_targets * ki.model.action_vocab.numel()
    prefix_tokens = cameras * (res // 16) ** 2 + args.prompt_len
    print(f"\ncase {args.case}: tiny variant, CPU x{torch.get_num_threads()}, batch {args.batch}, chunk {args.chunk}, "
          f"action dim {args.dim}, {cameras} cameras {res}x{res}, prompt {args.prompt_len} tokens ({prefix_tokens} "
          f"image + prompt tokens), FAST layout {fast_tokens:.1f} tokens/chunk; median over {args.rounds} interleaved "
          f"rounds of {args.repeats} (+{args.warmup} warm-up); 1-min load average {load_before:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after")  # fmt: skip
    print(f"{'policy':<17}{'train step s':>13}{'peak RSS +MiB':>15}{'sample s (B=1)':>16}{'fwd+bwd GFLOP':>15}")
    for name in trained:
        rss = max(peak[name], key=lambda v: v or 0)
        sample_s = f"{statistics.median(sample[name]):>16.4f}" if name in sample else f"{'-':>16}"
        print(f"{name:<17}{statistics.median(train[name]):>13.4f}{(rss if rss is not None else float('nan')):>15.0f}"
              f"{sample_s}{flops[name] / 1e9:>15.3f}")  # fmt: skip
    step = {name: statistics.median(seconds) for name, seconds in train.items()}
    base_peak, ki_peak = (max(peak[name], key=lambda v: v or 0) for name in ("pi05 (core)", "pi05_ki"))
    fast_flops = flops["pi05_ki"] - flops["pi05_ki no FAST"] + ce_flops
    floor = (flops["pi05 (core)"] + fast_flops) / flops["pi05 (core)"]
    print(f"pi05_ki / pi05: train step {step['pi05_ki'] / step['pi05 (core)']:.2f}x measured (target <= 1.15x), "
          f"FLOP-count floor {floor:.2f}x = (pi05 {flops['pi05 (core)'] / 1e9:.3f} + FAST tokens "
          f"{fast_flops / 1e9:.3f} GFLOP, incl. LM-head slice and CE {ce_flops / 1e9:.4f}) / pi05; sampling "
          f"{statistics.median(sample['pi05_ki']) / statistics.median(sample['pi05 (core)']):.2f}x (target ~1.00x)"
          + (f", peak memory {ki_peak / base_peak:.2f}x" if base_peak and ki_peak else ""))  # fmt: skip
    print(f"  = pi05_ki without FAST tokens / pi05 {step['pi05_ki no FAST'] / step['pi05 (core)']:.2f}x (KI's own "
          f"machinery) x pi05_ki / pi05_ki without FAST tokens {step['pi05_ki'] / step['pi05_ki no FAST']:.2f}x (the "
          "FAST tokens' own time)")  # fmt: skip
    flow_s, both_s = statistics.median(sample["pi05_ki"]), statistics.median(disagreement)
    print(f"pi05_ki with --policy.report_disagreement=true: {both_s:.4f} s per chunk (B=1) vs {flow_s:.4f} s flow "
          f"only ({both_s / flow_s:.2f}x; random weights: long FAST decodes)")  # fmt: skip
    print(f"pi0_fast / pi05_ki, same batch: train step {step['pi0_fast'] / step['pi05_ki']:.2f}x (target <= 1.00x)")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
