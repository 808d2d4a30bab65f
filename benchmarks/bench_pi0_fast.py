"""The plugin's pi0_fast against LeRobot's core pi0_fast (and flow sampling) at tiny scale on CPU, in one run.

Core numbers come from the shared anchor (``../shared/bench/anchor_core_policies.py``, imported at run time): the
same tiny backbone (2-layer Gemma width 64, 1-layer SigLIP, 64x64 images, full 257,152-id vocabulary), batch 8,
chunk 50, 7-D actions of real G1 data, two cameras, a prompt padded to 32 tokens, the anchor's offline text
tokenizer and its FAST fit (MEAN_STD-normalised chunks, vocab 1024). The plugin's policy gets the same raw batch
through its own processors (split layout, ``split_every`` steps per FAST sub-chunk, a FAST tokenizer fitted the
same way on sub-chunks). Reported side by side (median, warm-up excluded, 2 threads):

* training step (forward + backward + grad clip + AdamW) and its peak-RSS increase;
* greedy KV-cache chunk decoding, batch 1: s/chunk, tokens, ms/token and failed decodes with random weights (core:
  at most 256 and 40 tokens, all-zero chunks, silent; plugin: the full exact-grammar decode through
  ``predict_action_chunk``, incomplete chunks, and a decode cut after 40 tokens for the marginal cost per token);
* the exact grammar's own cost per generated token (legal-candidate mask plus state update, replayed on the
  decoded sequences) next to the decode time per token;
* tokens per chunk of the same held-out chunks (core: ``<bos> Action : FAST | <eos>``; plugin: the split layout,
  for split_every 10 / 25 / 50);
* chunk latency of flow sampling (core pi05 and the plugin's pi05_ki, 10 steps) for comparison.

The plugin is measured first, then core (freed memory kept by the allocator can only lower core's peak).

Usage: HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_pi0_fast.py [--repeats 5] [--warmup 2] [--out FILE]
(the JSON goes to outputs/bench_pi0_fast.json by default)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
ANCHOR = REPO.parent / "shared" / "bench" / "anchor_core_policies.py"


def load_anchor(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("anchor_core_policies", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def plugin_config(anchor: ModuleType, text_dir: str, fast_dir: str, prompt_len: int, split_every: int) -> Any:
    from lerobot_fastplus.policies.pi0_fast.configuration_pi0_fast import PI0FastConfig

    config = PI0FastConfig(
        device="cpu",
        paligemma_variant="gemma_tiny",
        chunk_size=anchor.H,
        n_action_steps=anchor.H,
        split_every=split_every,
        image_resolution=(anchor.RES, anchor.RES),
        tokenizer_max_length=prompt_len,
        text_tokenizer_name=text_dir,
        action_tokenizer_name=fast_dir,
    )
    return anchor.set_features(config)


def fit_split_tokenizer(chunks: torch.Tensor, stats: dict, split_every: int, path: Path) -> str:
    """FAST fitted like the anchor's (MEAN_STD, scale 10, vocab 1024, first 200 chunks held out), on sub-chunks."""
    from lerobot_fastplus.fast import FastTokenizer

    norm = ((chunks[200:] - stats["action"]["mean"]) / stats["action"]["std"]).double().numpy()
    subs = np.concatenate([norm[:, s : s + split_every] for s in range(0, norm.shape[1], split_every)])
    return str(FastTokenizer.fit(subs, scale=10, vocab_size=1024).save(path))


def bench_plugin_pi0_fast(args, anchor, chunks, states, stats, text_dir: str, fast_dir: str) -> dict[str, Any]:
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.utils.constants import OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS

    from lerobot_fastplus.policies.pi0_fast.modeling_pi0_fast import PI0FastPolicy

    torch.manual_seed(0)
    config = plugin_config(anchor, text_dir, fast_dir, args.prompt_len, args.split_every)
    policy = PI0FastPolicy(config)
    pre, _ = make_pre_post_processors(config, dataset_stats=stats)
    batch = pre(anchor.raw_batch(chunks, states, 0, anchor.B, True))
    r = anchor.common(policy, batch)
    r["layout_tokens_mean_batch8"] = float(batch["fastplus.action_token_valid"].sum(1).float().mean())
    r["train_s"], r["train_all"], r["train_peak_rss_MiB"] = anchor.timed(
        anchor.train_fn(policy, config, batch), args.warmup, args.repeats
    )
    n = args.warmup + args.repeats
    inputs = anchor.inference_inputs(pre, chunks, states, n)
    reports = []

    def decode(inputs=inputs, reports=reports) -> None:
        policy.reset()
        policy.predict_action_chunk(next(inputs))
        reports.append(policy.last_decode)

    s, all_s, _ = anchor.timed(decode, args.warmup, args.repeats)
    lengths = [int(rep.lengths[0]) for rep in reports]
    tok = statistics.median(lengths[args.warmup :])
    r["decode_full"] = {
        "s_per_chunk": s,
        "all": all_s,
        "tokens_per_chunk": tok,
        "ms_per_token": 1e3 * s / tok,
        "n_chunks": n,
        "grammar_bound": policy.grammar.max_length,
        "incomplete_chunks": sum(rep.n_incomplete for rep in reports),
        "held_origin_chunks": int(sum(rep.held_origin.sum() for rep in reports)),
    }
    cut = anchor.inference_inputs(pre, chunks, states, n)

    def decode_40(inputs=cut) -> None:  # an instrument: a decode stopped after 40 tokens (incomplete on purpose)
        obs = next(inputs)
        images, img_masks = policy._preprocess_images(obs)
        tokens, masks = obs[OBS_LANGUAGE_TOKENS], obs[OBS_LANGUAGE_ATTENTION_MASK]
        policy.model.generate(images, img_masks, tokens, masks, policy.grammar, max_steps=40)

    s40, all40, _ = anchor.timed(decode_40, args.warmup, args.repeats)
    r["decode40"] = {"s_per_chunk": s40, "all": all40, "tokens_per_chunk": 40, "ms_per_token": 1e3 * s40 / 40}
    r["grammar_ms_per_token"] = grammar_ms_per_token(policy, [rep.tokens for rep in reports], args.repeats)
    r["grammar_share_of_decode"] = r["grammar_ms_per_token"] / r["decode_full"]["ms_per_token"]
    full, d40 = r["decode_full"], r["decode40"]
    r["marginal_ms_per_token"] = (
        1e3 * (full["s_per_chunk"] - d40["s_per_chunk"]) / max(full["tokens_per_chunk"] - d40["tokens_per_chunk"], 1)
    )
    return r


def grammar_ms_per_token(policy: Any, sequences: list[np.ndarray], repeats: int) -> float:
    """Median ms per generated token of the exact grammar alone (``legal`` + ``advance``, batch 1, on the decode
    device), replaying the decoded sequences: what constraining costs on top of the model's forward step."""
    grammar = policy.grammar
    n = policy.layout.n_fast_ids
    candidates = [torch.as_tensor(np.where(seq[0] < n, seq[0], seq[0] - 1)) for seq in sequences]
    times = []
    for _ in range(repeats):
        start, steps = time.perf_counter(), 0
        for seq in candidates:
            state = grammar.start(1)
            for chosen in seq[:, None]:
                grammar.legal(state)
                state = grammar.advance(state, chosen)
            steps += len(seq)
        times.append((time.perf_counter() - start) / steps)
    return 1e3 * statistics.median(times)


def token_counts(chunks: torch.Tensor, stats: dict, anchor_fast_dir: str, tmp: Path) -> dict[str, float]:
    """Mean sequence length of the held-out chunks: core's layout (anchor FAST, 50-step chunks, plus BOS,
    'Action', ':', '|', EOS) against the split layout at several split_every (FAST fitted per horizon)."""
    from lerobot_fastplus.fast import FastTokenizer, SplitLayout

    held_out = ((chunks[:200] - stats["action"]["mean"]) / stats["action"]["std"]).double().numpy()
    core_fast = FastTokenizer.load(anchor_fast_dir)
    counts = {"core": float(np.mean([len(ids) + 5 for ids in core_fast.encode(held_out, clip=True)]))}
    for split_every in (10, 25, 50):
        fast = FastTokenizer.load(fit_split_tokenizer(chunks, stats, split_every, tmp / f"fast_split{split_every}"))
        layout = SplitLayout(fast, held_out.shape[1], split_every)
        counts[f"split_every={split_every}"] = float(layout.build(held_out, clip=True).lengths.mean())
    return counts


def bench_pi05_ki_flow(args, anchor, chunks, states, stats, text_dir: str, fast_dir: str) -> dict[str, Any]:
    from lerobot.policies.factory import make_pre_post_processors

    from lerobot_fastplus.policies.pi05_ki.configuration_pi05_ki import PI05KIConfig
    from lerobot_fastplus.policies.pi05_ki.modeling_pi05_ki import PI05KIPolicy

    torch.manual_seed(0)
    config = anchor.set_features(
        PI05KIConfig(
            device="cpu",
            paligemma_variant="gemma_tiny",
            action_expert_variant="gemma_tiny",
            chunk_size=anchor.H,
            n_action_steps=anchor.H,
            split_every=args.split_every,
            image_resolution=(anchor.RES, anchor.RES),
            tokenizer_max_length=args.prompt_len,
            text_tokenizer_name=text_dir,
            fast_tokenizer_path=fast_dir,
        )
    )
    policy = PI05KIPolicy(config)
    pre, _ = make_pre_post_processors(config, dataset_stats=stats)
    inputs = anchor.inference_inputs(pre, chunks, states, args.warmup + args.repeats)
    s, all_s, _ = anchor.timed(lambda: policy.predict_action_chunk(next(inputs)), args.warmup, args.repeats)
    return {"sample_s": s, "sample_all": all_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--split-every", type=int, default=10)
    ap.add_argument("--anchor", type=Path, default=ANCHOR)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "g1_bottle_pick")
    ap.add_argument("--out", type=Path, default=Path("outputs/bench_pi0_fast.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    anchor = load_anchor(args.anchor)
    anchor.make_tiny(anchor.m05)
    anchor.make_tiny(anchor.mfast)
    import lerobot_fastplus  # noqa: F401  (takes over the pi0_fast type; core classes are used directly below)

    chunks, states, stats, src = anchor.load_data(
        str(args.data) if args.data.is_dir() else None, np.random.default_rng(0)
    )
    res: dict[str, Any] = {
        "env": {
            "threads": torch.get_num_threads(),
            "data": src,
            "batch": anchor.B,
            "chunk": anchor.H,
            "action_dim": anchor.A,
            "split_every": args.split_every,
            "warmup": args.warmup,
            "repeats": args.repeats,
        },
        "anchor_notes": anchor.NOTES,
    }
    with tempfile.TemporaryDirectory(prefix="bench_pi0_fast_") as tmp_name:
        tmp = Path(tmp_name)
        text_dir = anchor.redirect_paligemma(anchor.build_text_tokenizer(str(tmp / "text")))
        core_fast_dir = anchor.fit_fast(chunks[200:], stats, str(tmp / "fast_core"))
        fast_dir = fit_split_tokenizer(chunks, stats, args.split_every, tmp / "fast_split")
        ours = res["plugin_pi0_fast"] = bench_plugin_pi0_fast(args, anchor, chunks, states, stats, text_dir, fast_dir)
        res["tokens_per_chunk_held_out"] = token_counts(chunks, stats, core_fast_dir, tmp)
        try:
            res["plugin_pi05_ki_flow"] = bench_pi05_ki_flow(args, anchor, chunks, states, stats, text_dir, fast_dir)
        except Exception as err:  # pi05_ki is another issue's work; the comparison is optional
            res["plugin_pi05_ki_flow"] = {"error": repr(err)}
        core = res["core_pi0_fast"] = anchor.bench_pi0_fast(args, chunks, states, stats, text_dir, core_fast_dir)
        res["core_pi05"] = anchor.bench_pi05(args, chunks, states, stats)

    counts = res["tokens_per_chunk_held_out"]
    ratios = {
        "train_step": ours["train_s"] / core["train_s"],
        "train_peak_rss": ours["train_peak_rss_MiB"] / core["train_peak_rss_MiB"],
        "ms_per_token": ours["decode_full"]["ms_per_token"] / core["decode256"]["ms_per_token"],
        "marginal_ms_per_token": ours["marginal_ms_per_token"] / core["marginal_ms_per_token"],
        f"tokens_per_chunk_split{args.split_every}": counts[f"split_every={args.split_every}"] / counts["core"],
    }
    res["ratios_plugin_over_core"] = ratios
    rows = [
        ("train step (B=8)", f"{core['train_s']:.3f} s", f"{ours['train_s']:.3f} s", ratios["train_step"]),
        (
            "train peak RSS increase",
            f"{core['train_peak_rss_MiB']:.0f} MiB",
            f"{ours['train_peak_rss_MiB']:.0f} MiB",
            ratios["train_peak_rss"],
        ),
    ]
    c, o = core["decode256"], ours["decode_full"]
    rows += [
        (
            "decode/chunk (B=1; core max 256, plugin full)",
            f"{c['s_per_chunk']:.4f} s ({c['tokens_per_chunk']} tok)",
            f"{o['s_per_chunk']:.4f} s ({o['tokens_per_chunk']} tok)",
            o["s_per_chunk"] / c["s_per_chunk"],
        ),
        ("  ms/token", f"{c['ms_per_token']:.3f}", f"{o['ms_per_token']:.3f}", ratios["ms_per_token"]),
        (
            "  failed decodes (random weights)",
            f"{c['zero_chunks']}/{c['n_chunks']} all-zero, silent",
            f"{o['incomplete_chunks']}/{o['n_chunks']} incomplete ({o['held_origin_chunks']} held origin)",
            None,
        ),
        (
            "  exact grammar ms/token (share of decode)",
            "-",
            f"{ours['grammar_ms_per_token']:.4f} ({100 * ours['grammar_share_of_decode']:.1f}%)",
            None,
        ),
        (
            "decode/chunk (B=1, max 40)",
            f"{core['decode40']['s_per_chunk']:.4f} s",
            f"{ours['decode40']['s_per_chunk']:.4f} s",
            ours["decode40"]["s_per_chunk"] / core["decode40"]["s_per_chunk"],
        ),
    ]
    rows.append(
        (
            "marginal ms/token (core 256 vs 40, plugin full vs 40)",
            f"{core['marginal_ms_per_token']:.3f}",
            f"{ours['marginal_ms_per_token']:.3f}",
            ratios["marginal_ms_per_token"],
        )
    )
    rows.append(
        (
            "tokens/chunk, training batch of 8",
            f"{core['fast_segment_tokens_mean']:.1f}",
            f"{ours['layout_tokens_mean_batch8']:.1f}",
            ours["layout_tokens_mean_batch8"] / core["fast_segment_tokens_mean"],
        )
    )
    for name, value in counts.items():
        if name != "core":
            rows.append(
                (f"tokens/chunk held out, {name}", f"{counts['core']:.1f}", f"{value:.1f}", value / counts["core"])
            )
    flow = res["plugin_pi05_ki_flow"]
    rows.append(
        (
            "flow sampling/chunk: core pi05 | pi05_ki",
            f"{res['core_pi05']['sample_s']:.4f} s",
            f"{flow['sample_s']:.4f} s" if "sample_s" in flow else flow["error"][:40],
            None,
        )
    )
    print(
        f"\npi0_fast, tiny, CPU x{torch.get_num_threads()}, data={src}, median of {args.repeats} (+{args.warmup} "
        f"warm-up), split_every={args.split_every}"
    )
    print(f"  {'':<46} {'core (LeRobot)':>28} {'plugin':>34}  plugin/core")
    for name, c, o, ratio in rows:
        print(f"  {name:<46} {c:>28} {o:>34}  {'' if ratio is None else f'{ratio:.3f}'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1, default=float))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
