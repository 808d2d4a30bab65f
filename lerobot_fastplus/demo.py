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

from lerobot.configs import NormalizationMode
from lerobot.datasets.dataset_tools import recompute_stats
from tqdm.auto import tqdm

from lerobot_fastplus.policies.common import write_paligemma_layout_tokenizer
from lerobot_fastplus.tools.evaluate_offline import (
    EvalOfflineConfig,
    OfflineEvalResult,
    evaluate_checkpoint,
    format_result,
    save_result,
)
from lerobot_fastplus.tools.synthetic_dataset import make_synthetic_dataset, reach_words
from lerobot_fastplus.tools.train_tokenizer import ToolResult, TrainTokenizerConfig, run_cli, train

DEMO_REPO_ID = "local/fastplus_demo_so100"
MARKER = "fastplus_demo.json"
LOG_LINE = re.compile(r"step:(?P<step>[\d.]+)(?P<unit>[KMB]?) .*")
METRICS = ("loss", "flow_loss", "fast_ce_loss", "fast_token_accuracy")
# Every joint relative, the gripper too (LeRobot's default keeps it absolute; the reach task moves it steadily).
RELATIVE_EXCLUDE_JOINTS: list[str] = []
NORMALIZATION = NormalizationMode.QUANTILES  # pi05's action normalisation
# A decoding has learned the task when its held-out MSE is at most BAR x that of holding the current state, and
# below that of the range centre (predicting 0 in normalised space).
BAR = 0.5
HOLD, CENTRE = "hold current state", "range centre"
DECODING_LABELS = {"flow": "flow sampling", "fast (AR)": "FAST head, autoregressive"}


@dataclass
class DemoConfig:
    # Everything goes here: dataset/, tokenizer/, train/, eval/, train_curves.png, summary.json.
    output_dir: str = "outputs/fastplus_demo"
    # Synthetic reach task: episodes of `episode_len` frames, one of `reach_targets` markers each (episode e
    # reaches for marker e % reach_targets); the last `held_out_episodes` are not trained on.
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
    # lerobot-train: optimizer steps, batch size, peak learning rate (cosine decay after 10% warm-up).
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


@dataclass(frozen=True)
class BarCheck:
    """One decoding's held-out MSE against the bar."""

    name: str
    mse: float
    hold: float
    centre: float

    @property
    def limit(self) -> float:
        return BAR * self.hold

    @property
    def passed(self) -> bool:
        return self.mse <= self.limit and self.mse < self.centre


def check_bar(evaluation: OfflineEvalResult) -> list[BarCheck]:
    """The bar check of every decoding the policy ran (not of the baselines)."""
    hold, centre = evaluation.result(HOLD).mse_normalized, evaluation.result(CENTRE).mse_normalized
    return [
        BarCheck(d.name, d.mse_normalized, hold, centre) for d in evaluation.decodings if d.name not in (HOLD, CENTRE)
    ]


def prepare_output_dir(out: Path) -> None:
    """Replace a previous demo in ``out``; refuse anything else that is there."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise ValueError(
                f"{out} exists and does not hold an earlier fastplus demo; refusing to replace it. "
                "Choose another --output_dir."
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(json.dumps({"tool": "fastplus-demo"}))


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


def parse_log_line(line: str) -> dict[str, float] | None:
    """The metrics of one ``lerobot-train`` log line (``step:100 smpl:800 ... loss:0.123 ...``), or None."""
    match = LOG_LINE.search(line)
    if match is None:
        return None
    scale = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9}[match["unit"]]
    record = {"step": float(match["step"]) * scale}
    for name in METRICS:
        value = re.search(rf"\b{name}:(-?[\d.]+(?:e[-+]?\d+)?)", line)
        if value:
            record[name] = float(value.group(1))
    return record


def run_training(command: list[str], steps: int, log_path: Path) -> list[dict[str, float]]:
    """Run lerobot-train, keep its full output in ``log_path`` and show one progress bar with the losses."""
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
    if proc.returncode != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"lerobot-train failed (exit {proc.returncode}); full log in {log_path}:\n{tail}")
    return records


def plot_training(records: list[dict[str, float]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    fig, (losses, accuracy) = plt.subplots(1, 2, figsize=(10, 4))
    for name in ("loss", "flow_loss", "fast_ce_loss"):
        losses.plot(steps, [r.get(name) for r in records], label=name)
    losses.set_yscale("log")
    losses.set_xlabel("step")
    losses.legend()
    accuracy.plot(steps, [r.get("fast_token_accuracy") for r in records], color="C3")
    accuracy.set_xlabel("step")
    accuracy.set_ylabel("next-token accuracy on FAST targets")
    fig.suptitle("pi05_ki training (lerobot-train log)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def format_comparison(evaluation: OfflineEvalResult, checks: list[BarCheck]) -> str:
    """The summary's lead: each decoding and both baselines, with the verdict against the bar."""
    hold, centre = evaluation.result(HOLD).mse_normalized, evaluation.result(CENTRE).mse_normalized
    bar = f"pass: at most {BAR:g} x hold = {BAR * hold:.4f} and below range centre {centre:.4f}"
    rows = [(DECODING_LABELS.get(c.name, c.name), f"{c.mse:.4f}", "PASS" if c.passed else "MISS") for c in checks]
    rows += [("hold the current state (baseline)", f"{hold:.4f}", ""), ("range centre (baseline)", f"{centre:.4f}", "")]
    width = max(len(name) for name, _, _ in rows)
    lines = [
        f"Held-out normalised MSE, first {evaluation.n_action_steps} actions of {len(evaluation.frames)} chunks from "
        f"episodes {evaluation.episodes} (lower is better; {bar}):"
    ]
    lines += [f"  {name.ljust(width)}  {mse}  {verdict}".rstrip() for name, mse, verdict in rows]
    missed = [c for c in checks if not c.passed]
    if not missed:
        lines.append(
            f"The policy learned the task: every decoding needs less than {BAR:g}x the error of holding still."
        )
    else:
        lines.append(
            "MISSED THE BAR: "
            + "; ".join(
                f"{DECODING_LABELS.get(c.name, c.name)} {c.mse:.4f} vs limit {c.limit:.4f}, centre {c.centre:.4f}"
                for c in missed
            )
            + ". Another seed or machine can land here; more steps (--steps) usually help."
        )
    return "\n".join(lines)


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
        "Your own data, the same way: recompute its statistics for relative actions (lerobot-edit-dataset "
        "--operation.type=recompute_stats --operation.relative_action=true --operation.chunk_size=<chunk_size>), "
        "fastplus-train-tokenizer --root=<dataset> --relative_actions=true --chunk_size=<chunk_size> "
        "--output_dir=<dir>, then lerobot-train --config_path=configs/pi05_ki_so100.json "
        "--policy.use_relative_actions=true --policy.fast_tokenizer_path=<dir>/tokenizer (README.md)."
    )


def run_demo(cfg: DemoConfig) -> OfflineEvalResult:
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
