"""The learning study from start to finish: data, FAST tokenizer and configs once, then per seed the policies trained
side by side with evaluations every ``eval_every`` steps; the JSON, the plot and the table (or, with ``--merge``,
earlier JSONs combined)."""

from __future__ import annotations

import json
import logging
import os
import re
import statistics
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lerobot.datasets import LeRobotDatasetMetadata
from lerobot.policies.pi05 import PI05Config

from lerobot_fastplus.data.chunks import parse_normalization_mode
from lerobot_fastplus.fast import FastTokenizer, SplitLayout
from lerobot_fastplus.policies.common import write_paligemma_layout_tokenizer
from lerobot_fastplus.tools.cli import run_cli
from study.config import EVALUATED, MAX_ACTION_TOKENS, StudyConfig
from study.data import StudyData, load_data, policy_chunks, policy_stats_and_fast_windows, training_batches
from study.evaluation import confidence_samples, evaluate, observation, second_difference_power
from study.plot import plot
from study.results import add_derived, machine_info, merge_results, portable
from study.tables import format_table
from study.training import build_policies, make_configs, train_step

logger = logging.getLogger("learning_study")


def run_seed(cfg: StudyConfig, seed: int, configs: dict, data: StudyData, text_dir: str, stats: dict) -> dict:
    trainees = build_policies(cfg, configs, stats, seed, text_dir)
    logger.info("seed %d: built %s", seed, ", ".join(trainees))
    first = next(iter(trainees.values()))
    prompt = first.pre(observation(data.eval_batches[0]))["observation.language.attention_mask"].sum(dim=1).max()
    if int(prompt) >= cfg.prompt_length:
        raise ValueError(f"prompts fill all --prompt_length={cfg.prompt_length} tokens (cut short); raise it.")
    methods = [m for m, (trained, _) in EVALUATED.items() if trained in trainees]
    evals: dict[str, list[dict]] = {m: [] for m in methods}
    eval_steps = sorted({0, cfg.steps, *range(cfg.eval_every, cfg.steps, cfg.eval_every)})
    batches = training_batches(cfg, data.train, seed)
    data_s: list[float] = []
    loop_start = time.perf_counter()
    final: dict[str, Any] = {"per_dim_mse": {}}
    for step in range(cfg.steps + 1):
        if step in eval_steps:
            for method in methods:
                scores, _ = evaluate(cfg, trainees[EVALUATED[method][0]], method, data, seed)
                result = {"step": step, **scores}
                evals[method].append(result)
                if step == cfg.steps:
                    final["per_dim_mse"][method] = result["mse_normalized_per_dim"]
                logger.info(
                    "seed %d step %d %s: %s",
                    seed,
                    step,
                    method,
                    {k: round(v, 5) for k, v in result.items() if isinstance(v, float)},
                )
        if step == cfg.steps:
            if data.confidence_batches:
                final["confidence"] = confidence_samples(cfg, trainees["pi05_ki"], data, seed)
            break
        start = time.perf_counter()
        raw = next(batches)
        data_s.append(time.perf_counter() - start)
        for trainee in trainees.values():
            train_step(trainee, raw)
        if (step + 1) % 20 == 0:
            logger.info(
                "seed %d step %d: %s", seed, step + 1, {n: round(t.losses[-1]["loss"], 4) for n, t in trainees.items()}
            )
    train = {
        name: {
            "losses": t.losses,
            "update_s": t.update_s,
            "update_s_median": statistics.median(t.update_s),
            "update_cpu_s_median": statistics.median(t.update_cpu_s),
            "preprocess_s_median": statistics.median(t.preprocess_s),
            "parameters": sum(p.numel() for p in t.policy.parameters()),
        }
        for name, t in trainees.items()
    }
    return {
        "seed": seed,
        "evals": evals,
        "final": final,
        "train": train,
        "data_s_median": statistics.median(data_s),
        "loop_s": time.perf_counter() - loop_start,  # training + evaluations of this seed, wall-clock
        "eval_s_total": sum(e["eval_s"] for method in evals.values() for e in method),
    }


def study(cfg: StudyConfig) -> dict:
    cfg.validate()
    root = cfg.dataset_root()
    if not (root / "meta" / "info.json").is_file():
        raise ValueError(f"{root} is not a local LeRobotDataset (no meta/info.json); pass --root=<dataset folder>.")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True)
    for noisy in (
        "lerobot_fastplus.policies.pi05_ki.modeling_pi05_ki",
        "lerobot_fastplus.policies.pi0_fast.modeling_pi0_fast",
    ):
        logging.getLogger(noisy).setLevel(logging.ERROR)  # decode failures are counted, not logged per batch
    started, load_before = time.time(), os.getloadavg()
    meta = LeRobotDatasetMetadata(cfg.dataset_repo_id(), root=root)
    mode = parse_normalization_mode(cfg.normalization)
    with tempfile.TemporaryDirectory(prefix="learning_study_") as tmp:
        probe = PI05Config(chunk_size=cfg.chunk_size, n_action_steps=cfg.n_action_steps)
        data = load_data(cfg, probe, meta)
        logger.info(
            "data: %d training frames (episodes %s), %d held-out frames scored (episodes %s)",
            len(data.train),
            data.train_episodes,
            len(data.gt_original),
            data.eval_episodes,
        )
        stats, windows = policy_stats_and_fast_windows(cfg, data.train, mode)
        if set(np.unique(windows.episode_index)) != set(data.train_episodes):
            raise RuntimeError("the FAST tokenizer would not be fitted on exactly the training episodes.")
        fast = FastTokenizer.fit(windows.normalized, vocab_size=cfg.vocab_size)
        logger.info("FAST tokenizer fitted on %d windows of %d steps", len(windows.normalized), cfg.split_every)
        fast_dir = str(fast.save(Path(tmp) / "fast"))
        held_out_chunks = policy_chunks(cfg, data.held_out, stats, mode)
        layout = SplitLayout(fast, cfg.chunk_size, cfg.split_every)
        layout_tokens = layout.lengths(held_out_chunks.normalized, clip=True)
        words = sorted({w for task in data.tasks for w in re.findall(r"\w+|[^\w\s]+", task.replace("_", " "))})
        text_dir = cfg.text_tokenizer or str(write_paligemma_layout_tokenizer(Path(tmp) / "text", words))
        configs = make_configs(cfg, meta, text_dir, fast_dir)
        patched = []
        if not configs["pi05"].image_features and "pi05" in cfg.policies:
            if cfg.patch_core_pi05_without_camera:
                patched = ["pi05"]
                logger.info("no camera: core pi05 runs on a prompt-only prefix (patched, as pi05_ki and pi0_fast)")
            else:
                cfg = replace(cfg, policies=[name for name in cfg.policies if name != "pi05"])
                logger.info("no camera: core pi05 refuses such a config and is left out")
                if not cfg.policies:
                    raise ValueError("no policy left to train; pass --patch_core_pi05_without_camera=true.")
        runs = [run_seed(cfg, seed, configs, data, text_dir, stats) for seed in cfg.seeds]
    methods = list(runs[0]["evals"])
    settings = {
        **portable(asdict(cfg)),
        "resolved_image_size": cfg.resolved_image_size(),
        "max_action_tokens": MAX_ACTION_TOKENS,
        "max_decoding_steps": "the exact grammar's bound",
        "prompt_only_patch_applied_to": patched,
    }
    result = {
        "settings": settings,
        "machine": {
            **machine_info(),
            "load_average_start": load_before,
            "load_average_end": os.getloadavg(),
            "wall_s": time.time() - started,
        },
        "data": {
            "train_episodes": data.train_episodes,
            "eval_episodes": data.eval_episodes,
            "train_frames": len(data.train),
            "eval_frames": data.eval_frames,
            "cameras": [] if cfg.image_free else list(meta.camera_keys),
            "action_dim": int(data.gt_original.shape[-1]),
            "normalization": mode.value,
            "fast_tokenizer": {
                "vocab_size": cfg.vocab_size,
                "fitted_on_windows": len(windows.normalized),
                "horizon": cfg.split_every,
                "normalized_range": [float(windows.normalized.min()), float(windows.normalized.max())],
                # split-layout sequence length (BOS to EOS) of every held-out chunk_size window, as recorded
                "held_out_tokens_per_chunk": float(layout_tokens.mean()),
                "held_out_chunks": len(layout_tokens),
            },
            "gt_smoothness_normalized": second_difference_power(data.gt_normalized),
            "gt_smoothness_original": second_difference_power(data.gt_original),
            "baselines": data.baselines,
            "per_dim_hold_mse": data.per_dim_hold_mse,
            "confidence_frames": len(data.confidence_gt_normalized) if data.confidence_batches else 0,
        },
        "methods": methods,
        "runs": runs,
    }
    return add_derived(result)


def main_study(cfg: StudyConfig) -> dict:
    # LeRobot configures the root logger at WARNING on import; progress lines of this study go to stderr
    logger.setLevel(logging.INFO)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
        logger.addHandler(handler)
        logger.propagate = False
    result = merge_results(cfg.merge) if cfg.merge else study(cfg)
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = cfg.name or f"learning_study_{cfg.dataset_root().name}"
    json_path, png_path = out_dir / f"{stem}.json", out_dir / f"{stem}.png"
    json_path.write_text(json.dumps(result, indent=1))
    plot(result, png_path)
    table = format_table(result)
    print(table)
    m = result["machine"]
    print(
        f"{m['cpu']} x{m['cpu_count']}, {m['torch_threads']} threads, load {m['load_average_start'][0]:.2f} -> "
        f"{m['load_average_end'][0]:.2f}; total {m['wall_s'] / 60:.1f} min\n{json_path}\n{png_path}"
    )
    return result


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return run_cli(StudyConfig, main_study, argv)
