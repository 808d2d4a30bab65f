"""FAST tokenizer speed: lerobot_fastplus vs the reference UniversalActionProcessor, in one run.

For each real dataset: fit a tokenizer on its normalised 10-step action chunks, save it, load the same
files into both implementations, check that they agree on 2,000 chunks, then time (median of
``--repeats`` after ``--warmup`` runs) batched encode and decode of those chunks on both sides, plus the
bare ``tokenizers`` batch BPE on the very strings our encode builds (the floor of any FAST encoder).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_fast_tokenizer.py [--datasets DIR ...] [--json out.json]

Targets (issue 2): encode >= 3x and decode >= 5x the reference; encode within 1.15x of the bare BPE.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
from lerobot.policies.molmoact2.molmoact2_hf_model.action_tokenizer import UniversalActionProcessor

from lerobot_fastplus.fast import FastTokenizer
from lerobot_fastplus.fast.tokenizer import _codes_to_strings
from lerobot_fastplus.tools.chunks import load_action_chunks, open_dataset

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def median_ms(fn: Callable[[], object], warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def fit_smallest_vocab(chunks: np.ndarray) -> FastTokenizer:
    """The stored quantiles of some datasets are narrow, so their coefficient range needs a larger vocabulary."""
    for vocab_size in (1024, 2048, 4096):
        try:
            return FastTokenizer.fit(chunks, vocab_size=vocab_size)
        except ValueError as err:
            if "vocab_size" not in str(err):
                raise
    raise SystemExit("no vocabulary up to 4096 fits these chunks; check the normalisation statistics")


def bench_dataset(root: Path, n_chunks: int, horizon: int, warmup: int, repeats: int) -> dict:
    dataset = open_dataset(root, f"local/{root.name}")
    all_chunks = load_action_chunks(dataset, horizon, show_progress=False).normalized
    chunks = load_action_chunks(dataset, horizon, max_chunks=n_chunks, seed=0, show_progress=False).normalized
    fitted = fit_smallest_vocab(all_chunks)

    with tempfile.TemporaryDirectory() as tmp:
        fitted.save(tmp)
        ours = FastTokenizer.load(tmp)
        reference = UniversalActionProcessor.from_pretrained_local(tmp)

    _, steps, dim = chunks.shape
    ids = ours.encode(chunks)
    reference_ids = [list(x) for x in reference(chunks)]
    decoded = ours.decode(ids, time_horizon=steps, action_dim=dim)
    reference_decoded = reference.decode(reference_ids, time_horizon=steps, action_dim=dim)
    strings = _codes_to_strings(ours.codes(chunks))

    def bare_bpe() -> list[list[int]]:
        return [e.ids for e in ours.bpe.encode_batch_fast(strings, add_special_tokens=False)]

    times = {
        "reference_encode_ms": median_ms(lambda: reference(chunks), warmup, repeats),
        "ours_encode_ms": median_ms(lambda: ours.encode(chunks), warmup, repeats),
        "bare_bpe_ms": median_ms(bare_bpe, warmup, repeats),
        "reference_decode_ms": median_ms(
            lambda: reference.decode(reference_ids, time_horizon=steps, action_dim=dim), warmup, repeats
        ),
        "ours_decode_ms": median_ms(lambda: ours.decode(ids, time_horizon=steps, action_dim=dim), warmup, repeats),
    }
    return {
        "dataset": root.name,
        "chunks": len(chunks),
        "chunk_shape": [int(steps), int(dim)],
        "vocab_size": ours.vocab_size,
        "tokens_per_chunk": float(np.mean([len(x) for x in ids])),
        "ids_identical": ids == reference_ids,
        "max_decode_difference": float(np.abs(decoded.actions - reference_decoded).max()),
        **times,
        "encode_speedup": times["reference_encode_ms"] / times["ours_encode_ms"],
        "decode_speedup": times["reference_decode_ms"] / times["ours_decode_ms"],
        "encode_over_bare_bpe": times["ours_encode_ms"] / times["bare_bpe_ms"],
    }


def print_table(result: dict) -> None:
    n = result["chunks"]
    print(
        f"\n{result['dataset']}: {n} chunks of {result['chunk_shape'][0]}x{result['chunk_shape'][1]}, "
        f"vocab {result['vocab_size']}, {result['tokens_per_chunk']:.1f} tokens/chunk, "
        f"ids identical: {result['ids_identical']}, max decode difference {result['max_decode_difference']:.1e}"
    )
    print(f"  {'':8} {'reference':>22} {'lerobot_fastplus':>22} {'speedup':>8} {'target':>7}")
    for op, target in (("encode", 3.0), ("decode", 5.0)):
        ref_ms, our_ms = result[f"reference_{op}_ms"], result[f"ours_{op}_ms"]
        print(
            f"  {op:8} {ref_ms:9.1f} ms {n / ref_ms * 1e3:7.0f}/s {our_ms:9.1f} ms {n / our_ms * 1e3:7.0f}/s "
            f"{ref_ms / our_ms:7.2f}x {target:6.1f}x"
        )
    print(
        f"  encode vs bare tokenizers batch BPE on the same strings: {result['ours_encode_ms']:.1f} ms vs "
        f"{result['bare_bpe_ms']:.1f} ms = {result['encode_over_bare_bpe']:.3f}x (target <= 1.15x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--datasets",
        nargs="+",
        type=Path,
        default=[SHARED_DATA / "so101_record_test", SHARED_DATA / "g1_bottle_pick"],
    )
    parser.add_argument("--n_chunks", type=int, default=2000)
    parser.add_argument("--horizon", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the reference logs every failed decode

    missing = [str(d) for d in args.datasets if not (d / "meta" / "info.json").is_file()]
    if missing:
        raise SystemExit(f"dataset(s) not found: {', '.join(missing)} (pass --datasets DIR ...)")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
        f"TOKENIZERS_PARALLELISM={os.environ.get('TOKENIZERS_PARALLELISM', 'unset')}"
    )
    results = [bench_dataset(d, args.n_chunks, args.horizon, args.warmup, args.repeats) for d in args.datasets]
    for result in results:
        print_table(result)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
