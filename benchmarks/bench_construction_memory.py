"""Peak host memory of building pi05_ki / pi0_fast in bf16 at the published widths, with and without init_from.

The models have the published widths (``gemma_2b`` backbone, ``gemma_300m`` expert), the full 257,152-id vocabulary
and the 27-layer So400m SigLIP at 224 px, but a Gemma depth of ``--depth`` (2 by default) so that this machine holds
them. Every case runs in a fresh Python process, so peaks do not mix:

* ``pi05_ki`` / ``pi0_fast`` built from random weights (``dtype=bfloat16``, CPU);
* the same with ``init_from`` a checkpoint that LeRobot's core pi05 / pi0_fast saved in bf16 at that size (made
  first, each in its own process, into ``--work_dir``; its file size is printed).

Reported per case: RSS before building (imports, FAST tokenizer), peak RSS (``VmHWM``: anonymous and file-backed
pages, so memory-mapped checkpoint pages count), bytes of the built model's tensors, and the ratio of the
construction's own peak (peak minus the RSS before building) to those bytes.

Usage: HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_construction_memory.py [--depth 2] [--output_dir DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: testing_support

DIM, RES, CHUNK = 6, 224, 50
POLICIES = ("pi05_ki", "pi0_fast")


def variants(depth: int) -> tuple[str, str]:
    """Register the published widths at ``depth`` layers as two plugin variants; returns (backbone, expert)."""
    from lerobot_fastplus.policies.common.backbone import GEMMA_VARIANTS
    from testing_support.core_tiny import with_depth

    names = (f"gemma_2b_depth{depth}", f"gemma_300m_depth{depth}")
    for name, published in zip(names, ("gemma_2b", "gemma_300m"), strict=True):
        GEMMA_VARIANTS[name] = with_depth(published, depth)
    return names


def set_features(config: Any) -> Any:
    from lerobot.configs.types import FeatureType, PolicyFeature

    config.input_features = {
        "observation.images.front": PolicyFeature(FeatureType.VISUAL, (3, RES, RES)),
        "observation.state": PolicyFeature(FeatureType.STATE, (DIM,)),
    }
    config.output_features = {"action": PolicyFeature(FeatureType.ACTION, (DIM,))}
    return config


def memory() -> dict[str, int]:
    """Current and peak RSS of this process, in bytes."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def tensor_bytes(module: Any) -> int:
    """Bytes of a module's parameters and buffers, each storage counted once."""
    seen, total = set(), 0
    for tensor in [*module.parameters(), *module.buffers()]:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


def save_core_checkpoint(policy: str, depth: int, out: Path) -> None:
    """Core pi05 / pi0_fast at the reduced-depth published widths, bf16, saved by core's ``save_pretrained``."""
    import torch
    from lerobot.policies.pi0_fast import PI0FastConfig
    from lerobot.policies.pi05 import PI05Config

    from testing_support.core_tiny import core_pi0_fast_with_variant, core_pi05_with_variants

    backbone, expert = variants(depth)
    torch.manual_seed(0)
    if policy == "pi05_ki":
        config = set_features(PI05Config(device="cpu", dtype="bfloat16", chunk_size=CHUNK, n_action_steps=CHUNK))
        core = core_pi05_with_variants(config, backbone, expert)
    else:
        config = set_features(PI0FastConfig(device="cpu", dtype="bfloat16", chunk_size=CHUNK, n_action_steps=CHUNK))
        core = core_pi0_fast_with_variant(config, backbone)
    core.save_pretrained(out)


def build_case(policy: str, depth: int, fast_dir: str, init_from: str | None) -> dict[str, Any]:
    """Build one policy in this (fresh) process and measure it."""
    import torch

    from lerobot_fastplus.policies.pi0_fast.configuration_pi0_fast import PI0FastConfig
    from lerobot_fastplus.policies.pi0_fast.modeling_pi0_fast import PI0FastPolicy
    from lerobot_fastplus.policies.pi05_ki.configuration_pi05_ki import PI05KIConfig
    from lerobot_fastplus.policies.pi05_ki.modeling_pi05_ki import PI05KIPolicy

    backbone, expert = variants(depth)
    common = {"device": "cpu", "dtype": "bfloat16", "chunk_size": CHUNK, "n_action_steps": CHUNK}
    if policy == "pi05_ki":
        config = PI05KIConfig(**common, paligemma_variant=backbone, action_expert_variant=expert,
                              fast_tokenizer_path=fast_dir, init_from=init_from)  # fmt: skip
        cls = PI05KIPolicy
    else:
        config = PI0FastConfig(**common, paligemma_variant=backbone, action_tokenizer_name=fast_dir,
                               init_from=init_from)  # fmt: skip
        cls = PI0FastPolicy
    set_features(config)
    torch.manual_seed(0)
    before = memory()["VmRSS"]
    start = time.perf_counter()
    built = cls(config)
    seconds = time.perf_counter() - start
    after = memory()
    return {
        "rss_before": before,
        "peak": after["VmHWM"],
        "rss_after": after["VmRSS"],
        "model_bytes": tensor_bytes(built),
        "seconds": seconds,
    }


def run_worker(args: argparse.Namespace) -> None:
    if args.save_core:
        save_core_checkpoint(args.policy, args.depth, Path(args.save_core))
        return
    print("RESULT " + json.dumps(build_case(args.policy, args.depth, args.fast_dir, args.init_from)))


def in_fresh_process(*flags: str) -> dict[str, Any] | None:
    result = subprocess.run([sys.executable, __file__, "--worker", *flags], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(flags)} failed:\n{result.stderr[-4000:]}")
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(lines[-1].removeprefix("RESULT ")) if lines else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=2, help="Gemma layers of backbone and expert")
    parser.add_argument("--output_dir", type=Path, default=Path("outputs/bench_construction_memory"))
    parser.add_argument("--work_dir", type=Path, default=None, help="checkpoints go here (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints in --work_dir")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--policy", choices=POLICIES, help=argparse.SUPPRESS)
    parser.add_argument("--fast_dir", help=argparse.SUPPRESS)
    parser.add_argument("--init_from", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--save_core", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
        return

    from lerobot_fastplus.fast import FastTokenizer

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_construction_"))
    rng = np.random.default_rng(0)
    chunks = np.clip(np.cumsum(rng.normal(0, 0.1, size=(400, 10, DIM)), axis=1), -1, 1)
    fast_dir = str(FastTokenizer.fit(chunks, vocab_size=1024).save(work / "fast"))
    rows = []
    try:
        for policy in POLICIES:
            ckpt = work / f"core_{'pi05' if policy == 'pi05_ki' else 'pi0_fast'}_bf16"
            in_fresh_process("--policy", policy, "--depth", str(args.depth), "--save_core", str(ckpt))
            ckpt_bytes = (ckpt / "model.safetensors").stat().st_size
            for init_from in (None, str(ckpt)):
                flags = ["--policy", policy, "--depth", str(args.depth), "--fast_dir", fast_dir]
                result = in_fresh_process(*flags, *(["--init_from", init_from] if init_from else []))
                ratio = (result["peak"] - result["rss_before"]) / result["model_bytes"]
                rows.append({"policy": policy, "init_from": init_from is not None, "checkpoint_bytes": ckpt_bytes,
                             **result, "ratio": ratio})  # fmt: skip
                print(
                    f"{policy:8s} {'init_from core bf16' if init_from else 'random init':20s} "
                    f"model {result['model_bytes'] / 2**30:5.2f} GiB  RSS before {result['rss_before'] / 2**30:5.2f}  "
                    f"peak {result['peak'] / 2**30:5.2f}  after {result['rss_after'] / 2**30:5.2f} GiB  "
                    f"(peak - before) / model = {ratio:.2f}x  {result['seconds']:5.1f} s  "
                    f"[checkpoint {ckpt_bytes / 2**30:.2f} GiB]",
                    flush=True,
                )
            if not args.keep:
                shutil.rmtree(ckpt)
    finally:
        if not args.keep and args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    out = args.output_dir / "construction_memory.json"
    out.write_text(json.dumps({"depth": args.depth, "cases": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
