"""The learning study's JSON beyond the raw runs: the machine it ran on, the derived summary / comparisons /
confidence, portable settings, and the merge of runs made as separate processes (e.g. one seed each)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from contextlib import suppress
from pathlib import Path
from typing import Any

import lerobot
import torch
import transformers

from study.config import REPO_ROOT
from study.stats import compare, mean_within_group_spearman, summarize


def machine_info() -> dict[str, Any]:
    cpu = platform.processor()
    with suppress(OSError, StopIteration), open("/proc/cpuinfo") as info:
        cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True).stdout
    except OSError:
        commit = ""
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "lerobot": lerobot.__version__,
        "transformers": transformers.__version__,
        "git_commit": commit.strip(),
    }


def add_derived(result: dict) -> dict:
    """Summary over seeds, paired comparisons and the confidence correlation, all from ``result["runs"]``."""
    runs, methods = result["runs"], result["methods"]
    result["summary"] = summarize(runs, methods, result["data"]["baselines"])
    result["comparisons"] = {
        f"{a} vs {b}": row
        for a, b in (("pi05_ki/flow", "pi05"), ("pi05_ki/fast", "pi0_fast"))
        if (row := compare(runs, a, b)) is not None
    }
    if all("confidence" in run["final"] for run in runs):
        samples = [
            (run["final"]["confidence"]["disagreement"], run["final"]["confidence"]["flow_error"]) for run in runs
        ]
        result["confidence"] = {
            "per_seed": [{k: run["final"]["confidence"][k] for k in ("rho", "ci_low", "ci_high", "n")} for run in runs],
            "mean_per_seed": mean_within_group_spearman(samples),
        }
    return result


def portable(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings without machine-specific paths: the dataset by its folder name, no output folder."""
    out = {k: v for k, v in settings.items() if k != "output_dir"}
    if out.get("root"):
        out["root"] = Path(out["root"]).name
    return out


def machines_of(part: dict) -> list[dict]:
    """The machine of each process behind a result (an already merged result lists its parts')."""
    machine = part["machine"]
    return machine.get("per_part") or [machine]


def merge_results(paths: list[str]) -> dict:
    """One result from JSONs of this script that differ only in seeds, threads, notes and machine; a part may itself
    be a merged result, so a seed added later joins the committed ones."""
    parts = [json.loads(Path(path).read_text()) for path in paths]
    for part in parts:
        part["settings"] = portable(part["settings"])
    free = {"seeds", "threads", "note", "name", "output_dir", "merge", "merged_from"}
    first = {k: v for k, v in parts[0]["settings"].items() if k not in free}
    for path, part in zip(paths, parts, strict=True):
        other = {k: v for k, v in part["settings"].items() if k not in free}
        if other != first or part["data"]["eval_frames"] != parts[0]["data"]["eval_frames"]:
            diff = sorted(k for k in first.keys() | other.keys() if first.get(k) != other.get(k))
            raise ValueError(f"{path} was run with other settings than {paths[0]} ({diff or 'eval frames'}).")
    runs = sorted((run for part in parts for run in part["runs"]), key=lambda run: run["seed"])
    seeds = [run["seed"] for run in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {seeds} repeat across {paths}.")
    merged_from = [
        name
        for path, part in zip(paths, parts, strict=True)
        for name in part["settings"].get("merged_from", [Path(path).name])
    ]
    merged = {
        **parts[0],
        "settings": {**parts[0]["settings"], "seeds": seeds, "merged_from": merged_from},
        "machine": {**parts[0]["machine"], "per_part": [m for part in parts for m in machines_of(part)]},
        "runs": runs,
    }
    return add_derived(merged)
