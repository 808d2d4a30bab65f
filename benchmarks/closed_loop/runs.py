"""Running the study's commands offline, and reading what they leave: train-log timing, eval results."""

from __future__ import annotations

import json
import os
import re
import subprocess
from datetime import datetime
from pathlib import Path

LOG_TIME = re.compile(r"INFO (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) ")


def offline_env(threads: int) -> dict[str, str]:
    """The environment of every study command: offline, ``threads`` CPU threads."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def run_logged(args: list[str], log: Path, threads: int) -> subprocess.Popen:
    """Start ``args`` with stdout and stderr into ``log``; the caller waits."""
    log.parent.mkdir(parents=True, exist_ok=True)
    handle = log.open("w")
    handle.write(f"# started {datetime.now():%Y-%m-%d %H:%M:%S}\n# {' '.join(args)}\n")
    handle.flush()
    return subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, env=offline_env(threads))


def check(proc: subprocess.Popen, log: Path) -> None:
    if proc.wait() != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{proc.args[0]} failed (exit {proc.returncode}); log {log}:\n{tail}")


def checkpoint_seconds(run_dir: Path, log: Path) -> dict[int, float]:
    """Wall seconds from the start of training (the log's ``# started`` line, else its first timestamp) to the moment
    each checkpoint was written."""
    text = log.read_text(errors="replace") if log.is_file() else ""
    started = re.search(r"# started (\S+ \S+)", text) or LOG_TIME.search(text)
    if not started:
        return {}
    origin = datetime.strptime(started.group(1), "%Y-%m-%d %H:%M:%S").timestamp()
    return {step: (ckpt / "config.json").stat().st_mtime - origin for step, ckpt in checkpoints(run_dir).items()}


def checkpoints(run_dir: Path) -> dict[int, Path]:
    root = run_dir / "checkpoints"
    return {
        int(p.name): p / "pretrained_model" for p in sorted(root.glob("[0-9]*")) if (p / "pretrained_model").is_dir()
    }


def eval_result(out: Path) -> dict:
    overall = json.loads((out / "eval_info.json").read_text())["overall"]
    return {
        "successes": round(overall["pc_success"] * overall["n_episodes"] / 100),
        "n": overall["n_episodes"],
        "eval_s": overall["eval_s"],
    }
