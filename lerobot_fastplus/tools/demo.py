"""fastplus-demo: train a tiny pi05_ki from scratch and measure it driving the SO-101 arm in closed loop, offline,
in about 10 minutes on a CPU.

1. records scripted reach-and-close demonstrations in the SO-101 MuJoCo simulator (``fastplus-record-so101``'s
   code: DART noise on the executed action, the expert's action as the label), and a few more on later seeds that
   training never sees;
2. fits a FAST tokenizer on the training demonstrations' action chunks (``fastplus-train-tokenizer``'s code);
3. trains pi05_ki with LeRobot's own ``lerobot-train``, with the settings of ``configs/pi05_ki_so101_sim.json``
   (the command is printed, to copy);
4. runs LeRobot's own ``lerobot-eval --env.type=so101_sim`` on episodes whose cube positions no demonstration
   used: the trained policy and, on the same seeds, the scripted expert and three blind baselines (do nothing,
   random actions, the demonstrations' mean action; ``--policy.type=so101_baseline``);
5. measures the action error on the held-out demonstrations (open loop, a secondary figure);

and prints a summary that leads with the success rate, its Wilson 95% interval and the baselines'.

Evaluation needs no OpenGL: the simulator runs in state mode and ``lerobot-eval``'s videos are the env's schematic
top view. Everything goes under ``--output_dir``; re-running replaces the previous demo there (and refuses a
directory that does not hold one, so nothing else is deleted).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from lerobot_fastplus.evaluation.training_log import parse_log_line, plot_training
from lerobot_fastplus.tools.cli import run_cli

if TYPE_CHECKING:
    from lerobot_fastplus.evaluation.closed_loop import SuccessRate
    from lerobot_fastplus.evaluation.offline import OfflineEvalResult
    from lerobot_fastplus.tools.cli import ToolResult

DEMO_REPO_ID = "local/fastplus_demo_so101"
MARKER = "fastplus_demo.json"
TASK = "reach_close"
# LeRobot's warning when torchcodec cannot load, from its first line to torchcodec's end marker (group 1: the
# logging prefix).
TORCHCODEC_ERRORS = re.compile(
    r"^([^\n]*)Could not load libtorchcodec\..*?\[end of libtorchcodec loading traceback\]\.?\n",
    re.DOTALL | re.MULTILINE,
)
# configs/pi05_ki_so101_sim.json's policy settings as lerobot-train flags (a test keeps the two equal); the
# tokenizer paths and the length of the learning-rate schedule come from the run.
POLICY_FLAGS = {
    "type": "pi05_ki",
    "paligemma_variant": "gemma_tiny",
    "action_expert_variant": "gemma_tiny",
    "device": "cpu",
    "normalization_mapping": '{"VISUAL": "IDENTITY", "STATE": "MIN_MAX", "ACTION": "QUANTILES"}',
    "expert_state_token": "true",
    "tokenizer_max_length": "48",
    "chunk_size": "10",
    "n_action_steps": "5",
    "split_every": "10",
    "max_action_tokens": "40",
    "optimizer_lr": "0.003",
    "scheduler_decay_lr": "0.0003",
    "push_to_hub": "false",
}
# label -> so101_baseline kind; "mean" gets the demonstrations' mean action
BASELINES = {
    "scripted expert": "expert",
    "do nothing (hold)": "hold",
    "random actions": "random",
    "demos' mean action": "mean",
}
BLIND = ("do nothing (hold)", "random actions", "demos' mean action")
POLICY_LABEL = "pi05_ki (flow sampling)"


@dataclass
class DemoConfig:
    # Everything goes here: dataset/, held_out/, tokenizer/, train/, eval/, summary.json, commands.sh, ...
    output_dir: str = "outputs/fastplus_demo"
    # Scripted reach-and-close demonstrations to train on (simulator seeds 0 .. n_demos - 1).
    n_demos: int = 100
    # Standard deviation of the DART noise on the executed position action (the stored label stays the expert's).
    noise: float = 0.2
    # Demonstrations on the next seeds, never trained on: the open-loop check.
    held_out_demos: int = 10
    # lerobot-train optimizer steps (cosine learning-rate decay over them, 10 percent warm-up).
    steps: int = 1000
    # lerobot-train batch size.
    batch_size: int = 32
    # lerobot-train seed (weights, batches, flow noise).
    seed: int = 0
    # lerobot-eval episodes per policy.
    eval_episodes: int = 50
    # Simulator seed of the first evaluation episode (far past the recordings' seeds).
    eval_seed: int = 100_000
    # The success rate the trained policy must reach, above every blind baseline's interval.
    bar: float = 0.8
    # Frames of the held-out demonstrations scored open loop.
    open_loop_frames: int = 24

    def validate(self) -> None:
        if self.n_demos < 1 or self.held_out_demos < 1 or self.eval_episodes < 1:
            raise ValueError("--n_demos, --held_out_demos and --eval_episodes must be at least 1.")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"--steps ({self.steps}) and --batch_size ({self.batch_size}) must be positive.")
        if self.noise < 0 or not 0 <= self.bar <= 1:
            raise ValueError(f"--noise ({self.noise}) must be >= 0 and --bar ({self.bar}) in [0, 1].")
        if self.eval_seed < self.n_demos + self.held_out_demos:
            raise ValueError(
                f"--eval_seed={self.eval_seed} reuses recorded seeds (0..{self.n_demos + self.held_out_demos - 1}); "
                "evaluate on later seeds."
            )


def prepare_output_dir(out: Path) -> None:
    """Replace a previous demo in ``out``; refuse anything else that is there, and a directory that cannot be made."""
    blocking = next((path for path in (out, *out.parents) if path.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise ValueError(f"--output_dir={out}: {blocking} is a file, not a directory. Choose another --output_dir.")
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise ValueError(
                f"{out} exists and does not hold an earlier fastplus demo; refusing to replace it. "
                "Choose another --output_dir."
            )
        shutil.rmtree(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER).write_text(json.dumps({"tool": "fastplus-demo"}))
    except OSError as err:
        raise ValueError(
            f"--output_dir={out} cannot be written ({err.strerror or err}). Choose a directory you can write to."
        ) from err


def lerobot_command(name: str) -> str:
    """The LeRobot console script next to this interpreter (a virtual environment), else the one on PATH."""
    script = Path(sys.executable).parent / name
    return str(script if script.exists() else shutil.which(name) or name)


def train_command(cfg: DemoConfig, out: Path, fast_dir: Path, text_dir: Path) -> list[str]:
    return [
        lerobot_command("lerobot-train"),
        *(f"--policy.{key}={value}" for key, value in POLICY_FLAGS.items()),
        f"--policy.text_tokenizer_name={text_dir}",
        f"--policy.fast_tokenizer_path={fast_dir}",
        f"--policy.scheduler_warmup_steps={max(1, cfg.steps // 10)}",
        f"--policy.scheduler_decay_steps={cfg.steps}",
        f"--dataset.repo_id={DEMO_REPO_ID}",
        f"--dataset.root={out / 'dataset'}",
        f"--steps={cfg.steps}",
        f"--batch_size={cfg.batch_size}",
        f"--save_freq={cfg.steps}",
        f"--log_freq={max(1, min(50, cfg.steps // 10))}",
        f"--seed={cfg.seed}",
        "--num_workers=0",
        "--wandb.enable=false",
        f"--output_dir={out / 'train'}",
    ]


def eval_command(cfg: DemoConfig, policy_flags: list[str], output_dir: Path) -> list[str]:
    return [
        lerobot_command("lerobot-eval"),
        *policy_flags,
        "--env.type=so101_sim",
        f"--env.task={TASK}",
        f"--eval.n_episodes={cfg.eval_episodes}",
        f"--eval.batch_size={min(10, cfg.eval_episodes)}",
        f"--seed={cfg.eval_seed}",
        f"--output_dir={output_dir}",
        f"--job_name={output_dir.name}",
    ]


def baseline_flags(kind: str, mean_action: list[float]) -> list[str]:
    flags = ["--policy.type=so101_baseline", f"--policy.kind={kind}", f"--policy.task={TASK}", "--policy.device=cpu"]
    if kind == "mean":
        flags.append(f"--policy.mean_action=[{','.join(f'{v:.6g}' for v in mean_action)}]")
    return flags


def fold_torchcodec_errors(text: str) -> str:
    """``text`` with each of LeRobot's "Could not load libtorchcodec" warnings (one loader traceback per FFmpeg
    version, about 100 lines without FFmpeg) cut to one line; LeRobot's next line, which says it falls back to
    pyav, stays. LeRobot tries torchcodec while draccus builds its commands' parsers, whatever
    ``--dataset.video_backend`` says; the demo needs no video decoder at all."""

    def one_line(match: re.Match[str]) -> str:
        left_out = match.group(0).count("\n")
        return (
            f"{match.group(1)}Could not load libtorchcodec ({left_out} lines of loader errors left out by the demo; "
            "harmless, the demo decodes no video)\n"
        )

    return TORCHCODEC_ERRORS.sub(one_line, text)


class FoldTorchcodecErrors(logging.Filter):
    """The same folding for LeRobot's warning in this process (the demo records and evaluates with LeRobot)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = fold_torchcodec_errors(record.getMessage() + "\n").rstrip("\n"), ()
        return True


def offline_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def check_exit(proc: subprocess.Popen, log_path: Path) -> None:
    log_path.write_text(fold_torchcodec_errors(log_path.read_text()))
    if proc.returncode != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-30:])
        name = Path(str(proc.args[0])).name
        raise RuntimeError(f"{name} failed (exit {proc.returncode}); full log in {log_path}:\n{tail}")


def run_training(command: list[str], steps: int, log_path: Path) -> list[dict[str, float]]:
    """Run lerobot-train, keep its output in ``log_path`` (torchcodec's loader errors folded, see
    ``fold_torchcodec_errors``) and show one progress bar with the losses."""
    records: list[dict[str, float]] = []
    with (
        log_path.open("w") as log,
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=offline_env()
        ) as proc,
        tqdm(total=steps, desc="lerobot-train", unit="step") as bar,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            record = parse_log_line(line)
            if record is not None:
                records.append(record)
                bar.update(int(record["step"]) - bar.n)
                bar.set_postfix({k: f"{v:.3g}" for k, v in record.items() if k != "step"})
    check_exit(proc, log_path)
    return records


def eval_dir(out: Path, label: str) -> Path:
    """Where the ``lerobot-eval`` run of ``label`` writes (``--output_dir``); its log goes beside it."""
    return out / "eval" / re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def run_evaluations(commands: dict[str, list[str]], out: Path) -> dict[str, SuccessRate]:
    """Run the ``lerobot-eval`` commands, two at a time (each is mostly start-up and simulator stepping), into
    ``eval_dir(out, label)``; their success rates by label."""
    from lerobot_fastplus.evaluation.closed_loop import read_eval_info

    pending = list(commands.items())
    running: list[tuple[str, subprocess.Popen, Path]] = []
    with tqdm(total=len(commands), desc="lerobot-eval", unit="policy") as bar:
        while pending or running:
            while pending and len(running) < 2:
                label, command = pending.pop(0)
                log_path = eval_dir(out, label).with_suffix(".log")
                with log_path.open("w") as log:
                    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=offline_env())
                running.append((label, proc, log_path))
            label, proc, log_path = running.pop(0)
            proc.wait()
            check_exit(proc, log_path)
            bar.update(1)
    return {label: read_eval_info(eval_dir(out, label), label) for label in commands}


def mean_action(dataset_root: Path) -> list[float]:
    return [float(v) for v in json.loads((dataset_root / "meta" / "stats.json").read_text())["action"]["mean"]]


def print_summary(
    cfg: DemoConfig,
    out: Path,
    seconds: float,
    rates: dict[str, SuccessRate],
    verdict: str,
    tokenizer: ToolResult,
    records: list[dict[str, float]],
    open_loop: OfflineEvalResult,
) -> None:
    from lerobot_fastplus.envs.so101_sim import REACH_CLOSE_TEXT

    first, last = records[0], records[-1]
    report = tokenizer.report
    mse = {d.name: d.mse_normalized for d in open_loop.decodings}
    last_seed = cfg.eval_seed + cfg.eval_episodes - 1
    rule = "=" * 100
    rows = "\n".join(rate.row() for rate in rates.values())
    print(
        f"\n{rule}\nfastplus demo done in {seconds / 60:.1f} min: a tiny pi05_ki trained from scratch drives the "
        f"SO-101 arm in MuJoCo.\n{rule}\n"
        f'Closed-loop success on "{REACH_CLOSE_TEXT}", lerobot-eval --env.type=so101_sim, {cfg.eval_episodes} '
        f"episodes\n(simulator seeds {cfg.eval_seed}..{last_seed}, cube positions no demonstration used; "
        f"Wilson 95% interval):\n{rows}\n{verdict}\n"
        f"videos      {eval_dir(out, POLICY_LABEL) / 'videos'}  (top view of the first 10 episodes; "
        "MuJoCo's camera instead: --env.video=camera, which needs EGL, e.g. apt-get install libegl1)\n\n"
        f"Open loop (secondary), {len(open_loop.frames)} frames of {cfg.held_out_demos} held-out demonstrations, "
        f"normalised action MSE of the first {open_loop.n_action_steps} actions: flow {mse['flow']:.4f}, "
        f"FAST head {mse['fast (AR)']:.4f}, range centre {mse['range centre']:.4f}  ({open_loop.png_path})\n\n"
        f"dataset     {out / 'dataset'}\n"
        f"            {cfg.n_demos} noisy-expert demonstrations (seeds 0..{cfg.n_demos - 1}); held out: "
        f"{out / 'held_out'}\n"
        f"tokenizer   {tokenizer.tokenizer_dir}\n"
        f"            {report.tokens_per_chunk.mean:.1f} FAST tokens per {report.horizon}-step chunk "
        f"({report.compression:.1f}x fewer than per-step binning), round-trip MSE "
        f"{report.errors.mse_normalized:.1e} (normalised)\n"
        f"training    {cfg.steps} steps, batch {cfg.batch_size}: flow loss {first['flow_loss']:.3g} -> "
        f"{last['flow_loss']:.3g}, FAST token accuracy {first['fast_token_accuracy']:.2f} -> "
        f"{last['fast_token_accuracy']:.2f}  ({out / 'train_curves.png'})\n"
        f"checkpoint  {out / 'train' / 'checkpoints' / 'last' / 'pretrained_model'}\n"
        f"commands    {out / 'commands.sh'}  (the lerobot-train and lerobot-eval commands, to rerun or vary)\n"
        f"summary     {out / 'summary.json'}\n\n"
        "Longer training and pick-and-place: docs/so101_sim.md. Your own robot data: README.md, section "
        '"Your own robot data", and docs/own_data.md.'
    )


def shell_line(command: list[str]) -> str:
    """``command`` as a shell command line to copy, one flag per line."""
    return " \\\n    ".join(shlex.quote(arg) for arg in command)


def write_commands(path: Path, commands: list[list[str]]) -> None:
    lines = "\n\n".join(shell_line(command) for command in commands)
    path.write_text(f"#!/bin/sh\n# What fastplus-demo ran, in order (offline: HF_HUB_OFFLINE=1).\n{lines}\n")


def run_demo(cfg: DemoConfig) -> dict[str, SuccessRate]:
    logging.getLogger("lerobot.utils.import_utils").addFilter(FoldTorchcodecErrors())
    from lerobot_fastplus.envs.so101_recording import record_demonstrations
    from lerobot_fastplus.envs.so101_sim import SO101SimEnv
    from lerobot_fastplus.evaluation.closed_loop import verdict
    from lerobot_fastplus.evaluation.offline import evaluate_checkpoint, save_result
    from lerobot_fastplus.evaluation.offline_config import EvalOfflineConfig
    from lerobot_fastplus.policies.common import write_dataset_words_tokenizer
    from lerobot_fastplus.tools.train_tokenizer import TrainTokenizerConfig, train

    cfg.validate()
    start = time.perf_counter()
    out = Path(cfg.output_dir).resolve()
    prepare_output_dir(out)
    env_cfg = SO101SimEnv(task=TASK)

    print(f"[1/5] Recording {cfg.n_demos} + {cfg.held_out_demos} scripted reach-and-close demonstrations (MuJoCo)")
    record_demonstrations(env_cfg, out / "dataset", DEMO_REPO_ID, cfg.n_demos, seed=0, noise=cfg.noise)
    record_demonstrations(
        env_cfg, out / "held_out", DEMO_REPO_ID, cfg.held_out_demos, seed=cfg.n_demos, noise=cfg.noise
    )
    text_dir = write_dataset_words_tokenizer(out / "dataset", out / "text_tokenizer")

    print("\n[2/5] Fitting a FAST tokenizer on the demonstrations' action chunks")
    chunk = int(POLICY_FLAGS["chunk_size"])
    tokenizer = train(
        TrainTokenizerConfig(
            repo_id=DEMO_REPO_ID,
            root=str(out / "dataset"),
            horizon=chunk,
            chunk_size=chunk,
            split_every=int(POLICY_FLAGS["split_every"]),
            vocab_size=512,
            seed=cfg.seed,
            output_dir=str(out / "tokenizer"),
        )
    )

    print(f"\n[3/5] Training a tiny pi05_ki for {cfg.steps} steps with lerobot-train; the command:")
    training = train_command(cfg, out, tokenizer.tokenizer_dir, text_dir)
    print(shell_line(training) + "\n")
    records = run_training(training, cfg.steps, out / "train.log")
    checkpoint = out / "train" / "checkpoints" / "last" / "pretrained_model"
    plot_training(records, out / "train_curves.png")

    print(f"\n[4/5] Closed loop: lerobot-eval --env.type=so101_sim, {cfg.eval_episodes} episodes per policy")
    actions = mean_action(out / "dataset")
    evals = {POLICY_LABEL: eval_command(cfg, [f"--policy.path={checkpoint}"], eval_dir(out, POLICY_LABEL))}
    for label, kind in BASELINES.items():
        evals[label] = eval_command(cfg, baseline_flags(kind, actions), eval_dir(out, label))
    write_commands(out / "commands.sh", [training, *evals.values()])
    (out / "eval").mkdir()
    rates = run_evaluations(evals, out)
    passed, sentence = verdict(rates[POLICY_LABEL], [rates[b] for b in BLIND], cfg.bar)

    print("\n[5/5] Open loop: action error on the held-out demonstrations (secondary)")
    open_loop = save_result(
        evaluate_checkpoint(
            EvalOfflineConfig(
                checkpoint=str(checkpoint),
                root=str(out / "held_out"),
                repo_id=DEMO_REPO_ID,
                n_frames=cfg.open_loop_frames,
                seed=cfg.seed,
            )
        ),
        out / "open_loop",
    )
    seconds = time.perf_counter() - start
    summary = {
        "config": asdict(cfg),
        "seconds": seconds,
        "closed_loop": {"passed": passed, "verdict": sentence, "results": [r.to_dict() for r in rates.values()]},
        "tokenizer": {"dir": str(tokenizer.tokenizer_dir), "report": str(tokenizer.report_json)},
        "training": {"checkpoint": str(checkpoint), "log": records},
        "open_loop": open_loop.to_dict(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print_summary(cfg, out, seconds, rates, sentence, tokenizer, records, open_loop)
    return rates


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run_cli(DemoConfig, run_demo, argv)
    except RuntimeError as err:  # lerobot-train or lerobot-eval failed; its log tail is in the message
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
