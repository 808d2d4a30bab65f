"""fastplus-demo: the whole pi05_ki pipeline on a built-in task, offline, in a few minutes on a CPU.

1. writes a small LeRobotDataset of a synthetic SO-100-like arm: in every episode the task names one of four
   coloured markers, the 64x64 camera shows it, and the arm sweeps toward it while opening or closing the gripper
   (``synthetic_dataset``'s reach task), so the actions move and depend on what the task text and the camera say;
   then recomputes the action statistics for relative actions with LeRobot's ``recompute_stats``;
2. fits a FAST tokenizer on the training episodes' relative action chunks (``fastplus-train-tokenizer``'s
   report), exactly the values pi05_ki's FAST step tokenizes;
3. trains a tiny ``pi05_ki`` with LeRobot's own ``lerobot-train`` on relative actions (the command is printed,
   to copy);
4. evaluates the checkpoint on held-out episodes (``fastplus-eval-offline``'s code): action error of flow
   sampling and of the backbone's autoregressive FAST head against "hold the current state" and "range centre";
5. prints a summary that leads with that comparison and whether each decoding clears the bar (at most half the
   error of holding the state, and below the range centre), then where the checkpoint, reports and plots are.

Why relative actions: pi0.5 sees the state only as 256 text bins, and a tiny model trained from scratch for a few
hundred steps cannot learn to read absolute joint positions from them; the motion relative to the current state
it can learn from the task text and the image.

Everything goes under ``--output_dir``; re-running replaces the previous demo there (and refuses a directory
that does not hold one, so nothing else is deleted).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from lerobot_fastplus.evaluation.offline_config import EvalOfflineConfig
from lerobot_fastplus.evaluation.training_log import parse_log_line, plot_training
from lerobot_fastplus.tools.cli import ToolResult, run_cli
from lerobot_fastplus.tools.train_tokenizer import TrainTokenizerConfig, train

if TYPE_CHECKING:
    from lerobot_fastplus.evaluation.offline import OfflineEvalResult

DEMO_REPO_ID = "local/fastplus_demo_so100"
MARKER = "fastplus_demo.json"
# LeRobot's warning when torchcodec cannot load, from its first line to torchcodec's end marker (group 1: the
# logging prefix).
TORCHCODEC_ERRORS = re.compile(
    r"^([^\n]*)Could not load libtorchcodec\..*?\[end of libtorchcodec loading traceback\]\.?\n",
    re.DOTALL | re.MULTILINE,
)
# Every joint relative, the gripper too (LeRobot's default keeps it absolute; the reach task moves it steadily).
RELATIVE_EXCLUDE_JOINTS: list[str] = []


@dataclass
class DemoConfig:
    # Everything goes here: dataset/, tokenizer/, train/, eval/, train_curves.png, summary.json.
    output_dir: str = "outputs/fastplus_demo"
    # Synthetic reach task: episodes of `episode_len` frames, one of `reach_targets` markers each (episode e
    # reaches for marker e mod reach_targets); the last `held_out_episodes` are not trained on.
    n_episodes: int = 24
    held_out_episodes: int = 4
    episode_len: int = 100
    reach_targets: int = 4
    image_size: int = 64
    fps: int = 30
    seed: int = 0
    # FAST tokenizer: sub-chunks of `split_every` steps, BPE vocabulary size.
    split_every: int = 10
    vocab_size: int = 1024
    # Policy: chunk of `chunk_size` actions, the first `n_action_steps` executed.
    chunk_size: int = 20
    n_action_steps: int = 10
    # Longest FAST token sequence of a chunk (bounds the autoregressive decode).
    max_action_tokens: int = 40
    # lerobot-train: optimizer steps, batch size, peak learning rate (cosine decay after 10 percent warm-up).
    steps: int = 600
    batch_size: int = 8
    learning_rate: float = 3e-3
    # Held-out evaluation: number of evenly spaced frames.
    eval_frames: int = 48

    def validate(self) -> None:
        if not 0 < self.held_out_episodes < self.n_episodes:
            raise ValueError(
                f"--held_out_episodes={self.held_out_episodes} must be in [1, n_episodes={self.n_episodes})."
            )
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"--steps ({self.steps}) and --batch_size ({self.batch_size}) must be positive.")
        if self.episode_len < self.chunk_size:
            raise ValueError(f"--episode_len={self.episode_len} must be at least --chunk_size={self.chunk_size}.")
        if self.chunk_size % self.split_every:
            raise ValueError(f"--chunk_size={self.chunk_size} must be a multiple of --split_every={self.split_every}.")
        if not 1 <= self.reach_targets <= 4:
            raise ValueError(f"--reach_targets={self.reach_targets} must be in [1, 4].")


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


def train_command(cfg: DemoConfig, out: Path, fast_dir: Path, text_dir: Path) -> list[str]:
    train_episodes = list(range(cfg.n_episodes - cfg.held_out_episodes))
    lerobot_train = Path(sys.executable).parent / "lerobot-train"
    return [
        str(lerobot_train if lerobot_train.exists() else shutil.which("lerobot-train") or "lerobot-train"),
        "--policy.type=pi05_ki",
        f"--dataset.repo_id={DEMO_REPO_ID}",
        f"--dataset.root={out / 'dataset'}",
        f"--dataset.episodes=[{','.join(map(str, train_episodes))}]",
        "--dataset.video_backend=pyav",
        "--policy.paligemma_variant=gemma_tiny",
        "--policy.action_expert_variant=gemma_tiny",
        "--policy.device=cpu",
        f"--policy.image_resolution=[{cfg.image_size},{cfg.image_size}]",
        "--policy.tokenizer_max_length=48",
        f"--policy.text_tokenizer_name={text_dir}",
        f"--policy.fast_tokenizer_path={fast_dir}",
        "--policy.use_relative_actions=true",
        f"--policy.relative_exclude_joints=[{','.join(RELATIVE_EXCLUDE_JOINTS)}]",
        f"--policy.chunk_size={cfg.chunk_size}",
        f"--policy.n_action_steps={cfg.n_action_steps}",
        f"--policy.split_every={cfg.split_every}",
        f"--policy.max_action_tokens={cfg.max_action_tokens}",
        f"--policy.optimizer_lr={cfg.learning_rate}",
        f"--policy.scheduler_warmup_steps={max(1, cfg.steps // 10)}",
        f"--policy.scheduler_decay_steps={cfg.steps}",
        f"--policy.scheduler_decay_lr={cfg.learning_rate / 10}",
        "--policy.push_to_hub=false",
        f"--steps={cfg.steps}",
        f"--batch_size={cfg.batch_size}",
        f"--save_freq={cfg.steps}",
        f"--log_freq={max(1, min(25, cfg.steps // 10))}",
        f"--seed={cfg.seed}",
        "--num_workers=0",
        "--wandb.enable=false",
        f"--output_dir={out / 'train'}",
    ]


def fold_torchcodec_errors(text: str) -> str:
    """``text`` with each of LeRobot's "Could not load libtorchcodec" warnings (one loader traceback per FFmpeg
    version, about 100 lines without FFmpeg) cut to one line; LeRobot's next line, which says it falls back to
    pyav, stays. LeRobot tries torchcodec while draccus builds lerobot-train's parser, whatever
    ``--dataset.video_backend`` says; the demo's images need no video decoder at all."""

    def one_line(match: re.Match[str]) -> str:
        left_out = match.group(0).count("\n")
        return (
            f"{match.group(1)}Could not load libtorchcodec ({left_out} lines of loader errors left out by the demo)\n"
        )

    return TORCHCODEC_ERRORS.sub(one_line, text)


def run_training(command: list[str], steps: int, log_path: Path) -> list[dict[str, float]]:
    """Run lerobot-train, keep its output in ``log_path`` (torchcodec's loader errors folded, see
    ``fold_torchcodec_errors``) and show one progress bar with the losses."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    records: list[dict[str, float]] = []
    with (
        log_path.open("w") as log,
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc,
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
    log_path.write_text(fold_torchcodec_errors(log_path.read_text()))
    if proc.returncode != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"lerobot-train failed (exit {proc.returncode}); full log in {log_path}:\n{tail}")
    return records


def print_summary(
    cfg: DemoConfig,
    out: Path,
    seconds: float,
    tokenizer: ToolResult,
    records: list[dict[str, float]],
    checkpoint: Path,
    evaluation: OfflineEvalResult,
    curves: Path,
) -> None:
    from lerobot_fastplus.evaluation.bar_check import check_bar, format_comparison
    from lerobot_fastplus.evaluation.offline import format_result

    first, last = records[0], records[-1]
    report = tokenizer.report
    held_out = f"{cfg.n_episodes - cfg.held_out_episodes}-{cfg.n_episodes - 1}"
    fast = evaluation.result("fast (AR)")
    rule = "=" * 100
    print(
        f"\n{rule}\nfastplus demo done in {seconds / 60:.1f} min: a tiny pi05_ki trained and evaluated offline."
        f"\n{rule}\n"
        f"{format_comparison(evaluation, check_bar(evaluation))}\n"
        f"plot        {evaluation.png_path}  (held-out recorded vs predicted chunks, flow and FAST head)\n\n"
        f"All decodings ({fast.incomplete_chunks} of {len(evaluation.frames)} FAST-head chunks incomplete; at run "
        "time pi05_ki uses flow sampling only, which RTC can steer; the FAST head is what the backbone learns "
        f"from):\n{format_result(evaluation)}\n\n"
        f"dataset     {out / 'dataset'}\n"
        f"            {cfg.n_episodes} synthetic SO-100 reach episodes x {cfg.episode_len} frames, "
        f"{cfg.reach_targets} markers (episodes {held_out} held out)\n"
        f"tokenizer   {tokenizer.tokenizer_dir}\n"
        f"            {report.tokens_per_chunk.mean:.1f} FAST tokens per {report.horizon}-step relative sub-chunk "
        f"({report.compression:.1f}x fewer than per-step binning), round-trip MSE "
        f"{report.errors.mse_normalized:.1e} (normalised)\n"
        f"training    {cfg.steps} steps, batch {cfg.batch_size}: loss {first['loss']:.3g} -> {last['loss']:.3g}, "
        f"flow loss {first['flow_loss']:.3g} -> {last['flow_loss']:.3g}, FAST token accuracy "
        f"{first['fast_token_accuracy']:.2f} -> {last['fast_token_accuracy']:.2f}\n"
        f"checkpoint  {checkpoint}\n"
        f"plots       {curves}  (training curves)\n"
        f"            {tokenizer.report_png}  (tokenizer)\n"
        f"reports     {out / 'summary.json'}, {evaluation.json_path},\n"
        f"            {tokenizer.report_json}, {out / 'train.log'}\n\n"
        'Your own data, the same way: README.md, section "Your own robot data" (relative-action statistics, a FAST '
        "tokenizer, then a tiny model on a CPU like this one, or the full-size config on a GPU); step by step in "
        "docs/own_data.md."
    )


def run_demo(cfg: DemoConfig) -> OfflineEvalResult:
    from lerobot.datasets.dataset_tools import recompute_stats

    from lerobot_fastplus.data.synthetic_dataset import make_synthetic_dataset, reach_words
    from lerobot_fastplus.evaluation.bar_check import check_bar
    from lerobot_fastplus.evaluation.offline import evaluate_checkpoint, save_result
    from lerobot_fastplus.policies.common import write_paligemma_layout_tokenizer

    cfg.validate()
    start = time.perf_counter()
    out = Path(cfg.output_dir).resolve()
    prepare_output_dir(out)
    train_episodes = list(range(cfg.n_episodes - cfg.held_out_episodes))

    print("[1/4] Writing a synthetic SO-100 LeRobotDataset (reach task) and its relative-action statistics")
    dataset = make_synthetic_dataset(
        out / "dataset",
        repo_id=DEMO_REPO_ID,
        n_episodes=cfg.n_episodes,
        episode_len=cfg.episode_len,
        image_size=cfg.image_size,
        fps=cfg.fps,
        seed=cfg.seed,
        reach_targets=cfg.reach_targets,
    )
    recompute_stats(
        dataset, relative_action=True, relative_exclude_joints=RELATIVE_EXCLUDE_JOINTS, chunk_size=cfg.chunk_size
    )

    print("\n[2/4] Fitting a FAST tokenizer on the training episodes' relative action chunks")
    tokenizer = train(
        TrainTokenizerConfig(
            repo_id=DEMO_REPO_ID,
            root=str(out / "dataset"),
            episodes=train_episodes,
            horizon=cfg.split_every,
            vocab_size=cfg.vocab_size,
            chunk_size=cfg.chunk_size,
            split_every=cfg.split_every,
            relative_actions=True,
            relative_exclude_joints=RELATIVE_EXCLUDE_JOINTS,
            seed=cfg.seed,
            output_dir=str(out / "tokenizer"),
        )
    )
    text_dir = write_paligemma_layout_tokenizer(out / "text_tokenizer", reach_words(cfg.reach_targets))

    print(f"\n[3/4] Training a tiny pi05_ki for {cfg.steps} steps with lerobot-train; the command:")
    command = train_command(cfg, out, tokenizer.tokenizer_dir, text_dir)
    print(" \\\n    ".join(command) + "\n")
    records = run_training(command, cfg.steps, out / "train.log")
    checkpoint = out / "train" / "checkpoints" / "last" / "pretrained_model"
    curves = plot_training(records, out / "train_curves.png")

    print("\n[4/4] Evaluating the checkpoint on the held-out episodes")
    evaluation = save_result(
        evaluate_checkpoint(
            EvalOfflineConfig(
                checkpoint=str(checkpoint),
                root=str(out / "dataset"),
                repo_id=DEMO_REPO_ID,
                episodes=list(range(len(train_episodes), cfg.n_episodes)),
                n_frames=cfg.eval_frames,
                seed=cfg.seed,
            )
        ),
        out / "eval",
    )
    seconds = time.perf_counter() - start
    summary = {
        "config": asdict(cfg),
        "seconds": seconds,
        "bar": [{**asdict(c), "limit": c.limit, "passed": c.passed} for c in check_bar(evaluation)],
        "tokenizer": {"dir": str(tokenizer.tokenizer_dir), "report": str(tokenizer.report_json)},
        "training": {"checkpoint": str(checkpoint), "log": records},
        "evaluation": evaluation.to_dict(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print_summary(cfg, out, seconds, tokenizer, records, checkpoint, evaluation, curves)
    return evaluation


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run_cli(DemoConfig, run_demo, argv)
    except RuntimeError as err:  # lerobot-train failed; its log tail is in the message
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
