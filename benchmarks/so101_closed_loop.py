"""Closed-loop study on the SO-101 MuJoCo simulator: record scripted demos, train with ``lerobot-train``, evaluate
every checkpoint with ``lerobot-eval --env.type=so101_sim`` next to the baselines, and write JSON, plot and table.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/so101_closed_loop.py --output_dir=outputs/so101_closed_loop \
        --policies=[pi05_ki,act] --seeds=[0] --steps=4000 --jobs=2

Stages (``--stages``): ``record`` (``fastplus-record-so101`` with DART noise, plus the stand-in text tokenizer),
``tokenizer`` (``fastplus-train-tokenizer`` on the recording), ``train`` (``configs/<policy>_so101_sim.json``, up to
``--jobs`` at once, ``--threads`` each), ``eval`` (every checkpoint, each decoding), ``baselines``, ``latency`` (one
chunk for one observation, last checkpoint of the first seed, ``benchmarks/closed_loop/latency.py``) and ``report``.
A stage left out reuses what an earlier run left in ``--output_dir``. Evaluation seeds start at ``--eval_seed``, far
past the recording's.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import draccus

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: benchmarks.*, testing_support

from benchmarks.closed_loop.commands import (
    BASELINE_KINDS,
    POLICIES,
    REPO,
    EvalSettings,
    StudyPaths,
    eval_baseline_command,
    eval_policy_command,
    record_command,
    tokenizer_command,
    train_command,
)
from benchmarks.closed_loop.report import markdown_table, plot
from benchmarks.closed_loop.runs import (
    check,
    checkpoint_seconds,
    checkpoints,
    eval_result,
    offline_env,
    run_logged,
)
from benchmarks.closed_loop.stats import over_seeds, success_entry

STAGES = ("record", "tokenizer", "train", "eval", "baselines", "latency", "report")


@dataclass
class ClosedLoopConfig:
    output_dir: str = "outputs/so101_closed_loop"
    task: str = "reach_close"
    n_demos: int = 100
    noise: float = 0.2
    demo_seed: int = 0
    chunk_size: int = 10
    policies: list[str] = field(default_factory=lambda: ["pi05_ki", "act"])
    seeds: list[int] = field(default_factory=lambda: [0])
    steps: int = 4000
    save_freq: int = 1000
    eval_episodes: int = 50
    eval_seed: int = 100_000
    jobs: int = 2
    threads: int = 1
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    # Name of the JSON / PNG / markdown files written into output_dir.
    name: str = "so101_closed_loop"


def train_all(cfg: ClosedLoopConfig, paths: StudyPaths) -> None:
    queue = [(policy, seed) for seed in cfg.seeds for policy in cfg.policies]
    running: list = []
    while queue or running:
        while queue and len(running) < cfg.jobs:
            policy, seed = queue.pop(0)
            log = paths.train_log(policy, seed)
            args = train_command(paths, cfg.task, policy, seed, cfg.steps, cfg.save_freq)
            running.append((run_logged(args, log, cfg.threads), log))
        proc, log = running.pop(0)
        check(proc, log)


def evaluate(args: list[str], out: Path, threads: int) -> dict:
    if not (out / "eval_info.json").is_file():
        log = out.with_suffix(".log")
        check(run_logged(args, log, threads), log)
    return eval_result(out)


def evaluate_policies(cfg: ClosedLoopConfig, paths: StudyPaths, settings: EvalSettings) -> dict:
    results: dict = {}
    for policy in cfg.policies:
        _, _, decodings = POLICIES[policy]
        for seed in cfg.seeds:
            timing = checkpoint_seconds(paths.run(policy, seed), paths.train_log(policy, seed))
            for step, ckpt in checkpoints(paths.run(policy, seed)).items():
                for label, flags in decodings.items():
                    out = paths.eval_dir(label, seed, step)
                    measured = evaluate(eval_policy_command(ckpt, flags, settings, out), out, cfg.threads)
                    cell = {
                        "seed": seed,
                        **success_entry(measured["successes"], measured["n"]),
                        "eval_s": measured["eval_s"],
                        "train_s": timing.get(step),
                    }
                    results.setdefault(label, {"per_step": {}})["per_step"].setdefault(str(step), []).append(cell)
    for result in results.values():
        last = max(int(step) for step in result["per_step"])
        result["final_over_seeds"] = over_seeds([c["rate"] for c in result["per_step"][str(last)]])
    return results


def measure_latency(cfg: ClosedLoopConfig, paths: StudyPaths) -> dict:
    """Per policy and decoding: milliseconds per chunk of the first seed's last checkpoint, one process at a time."""
    results = {}
    for policy in cfg.policies:
        found = checkpoints(paths.run(policy, cfg.seeds[0]))
        if not found:
            continue
        step, ckpt = max(found.items())
        for label, flags in POLICIES[policy][2].items():
            args = [sys.executable, "-m", "benchmarks.closed_loop.latency", str(ckpt), cfg.task, *flags]
            done = subprocess.run(args, cwd=REPO, env=offline_env(cfg.threads), capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"latency of {ckpt} failed:\n{done.stderr[-3000:]}")
            results[label] = {"seed": cfg.seeds[0], "step": step, **json.loads(done.stdout.strip().splitlines()[-1])}
    return results


def mean_action(paths: StudyPaths) -> list[float]:
    return json.loads((paths.dataset / "meta" / "stats.json").read_text())["action"]["mean"]


def main() -> None:
    cfg = draccus.parse(ClosedLoopConfig)
    unknown = set(cfg.stages) - set(STAGES) or set(cfg.policies) - set(POLICIES)
    if unknown:
        raise SystemExit(f"unknown stage or policy {sorted(unknown)}; stages: {STAGES}, policies: {list(POLICIES)}")
    paths = StudyPaths(Path(cfg.output_dir).resolve())
    settings = EvalSettings(task=cfg.task, episodes=cfg.eval_episodes, seed=cfg.eval_seed)
    json_path = paths.out / f"{cfg.name}.json"
    if "record" in cfg.stages:
        log = paths.out / "record.log"
        check(run_logged(record_command(paths, cfg.task, cfg.n_demos, cfg.noise, cfg.demo_seed), log, cfg.threads), log)
    if "tokenizer" in cfg.stages:
        log = paths.out / "tokenizer.log"
        check(run_logged(tokenizer_command(paths, cfg.chunk_size), log, cfg.threads), log)
    if "train" in cfg.stages:
        train_all(cfg, paths)
    study = json.loads(json_path.read_text()) if json_path.is_file() else {}
    study["settings"] = {**asdict(cfg), "output_dir": "<output_dir>", "machine": f"{platform.machine()} CPU"}
    if "eval" in cfg.stages:
        study["policies"] = {**study.get("policies", {}), **evaluate_policies(cfg, paths, settings)}
    if "baselines" in cfg.stages:
        study["baselines"] = {}
        for kind in BASELINE_KINDS:
            out = paths.eval_dir(f"baseline_{kind}", None, None)
            measured = evaluate(eval_baseline_command(kind, mean_action(paths), settings, out), out, cfg.threads)
            study["baselines"][kind] = {
                **success_entry(measured["successes"], measured["n"]),
                "eval_s": measured["eval_s"],
            }
    if "latency" in cfg.stages:
        study["latency"] = {**study.get("latency", {}), **measure_latency(cfg, paths)}
    json_path.write_text(json.dumps(study, indent=1))
    if "report" in cfg.stages:
        table = markdown_table(study)
        (paths.out / f"{cfg.name}.md").write_text(table + "\n")
        print(table)
        print(f"plot: {plot(study, paths.out / f'{cfg.name}.png')}")
    print(f"study JSON: {json_path}")


if __name__ == "__main__":
    main()
