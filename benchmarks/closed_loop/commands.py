"""Command lines of the closed-loop study: the package's recorder and tokenizer tool, LeRobot's train and eval."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
KI_DECODINGS = {
    "flow": ["--policy.action_decoding=flow"],
    "fast": ["--policy.action_decoding=fast"],
    "flow, noise 0": ["--policy.action_decoding=flow", "--policy.flow_noise_scale=0"],
}
# Prompt length of the pi0 family per task: the stand-in tokenizer gives one token per word and per state value, and
# pick-place's prompt (goal in the text, 26-D state) needs 56.
PROMPT_TOKENS = {"reach_close": 48, "pick_place": 64}
# policy -> (config file, extra lerobot-train flags, how its checkpoints are evaluated: label -> lerobot-eval flags)
# pi05's own way of reading the state: only the prompt's 256-bin tokens, under pi05's QUANTILES normalisation
PI05_STATE_READING = [
    "--policy.expert_state_token=false",
    '--policy.normalization_mapping={"VISUAL": "IDENTITY", "STATE": "QUANTILES", "ACTION": "QUANTILES"}',
]
# policy -> (config file, extra lerobot-train flags, how its checkpoints are evaluated: label -> lerobot-eval flags)
POLICIES: dict[str, tuple[str, list[str], dict[str, list[str]]]] = {
    "pi05_ki_state_token": (
        "pi05_ki_so101_sim.json",
        [],
        {f"pi05_ki+state token/{k}": v for k, v in KI_DECODINGS.items()},
    ),
    "pi05_ki": ("pi05_ki_so101_sim.json", PI05_STATE_READING, {f"pi05_ki/{k}": v for k, v in KI_DECODINGS.items()}),
    "pi05_ki_ordinal": (
        "pi05_ki_so101_sim.json",
        [*PI05_STATE_READING, "--policy.ordinal_state_embeddings=true"],
        {f"pi05_ki+ordinal/{k}": v for k, v in KI_DECODINGS.items()},
    ),
    "pi05_ki_minmax": (
        "pi05_ki_so101_sim.json",
        ["--policy.expert_state_token=false"],
        {f"pi05_ki+MIN_MAX state/{k}": v for k, v in KI_DECODINGS.items()},
    ),
    "pi0_fast": ("pi0_fast_so101_sim.json", [], {"pi0_fast": []}),
    "act": ("act_so101_sim.json", [], {"act": []}),
}
BASELINE_KINDS = ("expert", "hold", "random", "mean")


@dataclass
class StudyPaths:
    out: Path

    @property
    def dataset(self) -> Path:
        return self.out / "dataset"

    @property
    def text_tokenizer(self) -> Path:
        return self.out / "text_tokenizer"

    @property
    def fast_tokenizer(self) -> Path:
        return self.out / "fast" / "tokenizer"

    def run(self, policy: str, seed: int) -> Path:
        return self.out / "runs" / f"{policy}_s{seed}"

    def train_log(self, policy: str, seed: int) -> Path:
        return self.out / "runs" / f"{policy}_s{seed}.log"

    def eval_dir(self, label: str, seed: int | None, step: int | None) -> Path:
        name = label.replace("/", "_") + ("" if seed is None else f"_s{seed}") + ("" if step is None else f"_{step}")
        return self.out / "evals" / name


@dataclass
class EvalSettings:
    task: str
    episodes: int
    seed: int
    batch_size: int = 10
    env_flags: list[str] = field(default_factory=list)

    def flags(self, output_dir: Path) -> list[str]:
        return [
            "--env.type=so101_sim",
            f"--env.task={self.task}",
            *self.env_flags,
            f"--eval.n_episodes={self.episodes}",
            f"--eval.batch_size={min(self.batch_size, self.episodes)}",
            f"--seed={self.seed}",
            f"--output_dir={output_dir}",
        ]


def record_command(paths: StudyPaths, task: str, n_demos: int, noise: float, seed: int) -> list[str]:
    return [
        str(BIN / "fastplus-record-so101"),
        f"--task={task}",
        f"--n_episodes={n_demos}",
        f"--noise={noise}",
        f"--seed={seed}",
        f"--output_dir={paths.dataset}",
        f"--text_tokenizer_dir={paths.text_tokenizer}",
        "--overwrite=true",
    ]


def tokenizer_command(paths: StudyPaths, chunk_size: int) -> list[str]:
    return [
        str(BIN / "fastplus-train-tokenizer"),
        f"--root={paths.dataset}",
        f"--horizon={chunk_size}",
        f"--chunk_size={chunk_size}",
        f"--split_every={chunk_size}",
        "--vocab_size=512",
        f"--output_dir={paths.fast_tokenizer.parent}",
        "--overwrite=true",
    ]


def train_command(paths: StudyPaths, task: str, policy: str, seed: int, steps: int, save_freq: int) -> list[str]:
    config, extra, _ = POLICIES[policy]
    args = [
        str(BIN / "lerobot-train"),
        f"--config_path={REPO / 'configs' / config}",
        f"--dataset.root={paths.dataset}",
        f"--steps={steps}",
        f"--save_freq={save_freq}",
        f"--seed={seed}",
        f"--output_dir={paths.run(policy, seed)}",
        *extra,
    ]
    if policy.startswith("pi05_ki"):
        args += [
            f"--policy.text_tokenizer_name={paths.text_tokenizer}",
            f"--policy.fast_tokenizer_path={paths.fast_tokenizer}",
        ]
    elif policy == "pi0_fast":
        args += [
            f"--policy.text_tokenizer_name={paths.text_tokenizer}",
            f"--policy.action_tokenizer_name={paths.fast_tokenizer}",
        ]
    if policy != "act":
        args += [f"--policy.tokenizer_max_length={PROMPT_TOKENS[task]}"]
        args += [f"--policy.scheduler_warmup_steps={max(1, steps // 10)}", f"--policy.scheduler_decay_steps={steps}"]
    return args


def eval_policy_command(checkpoint: Path, decoding_flags: list[str], settings: EvalSettings, out: Path) -> list[str]:
    return [str(BIN / "lerobot-eval"), f"--policy.path={checkpoint}", *decoding_flags, *settings.flags(out)]


def eval_baseline_command(kind: str, mean_action: list[float], settings: EvalSettings, out: Path) -> list[str]:
    policy = ["--policy.type=so101_baseline", f"--policy.kind={kind}", f"--policy.task={settings.task}"]
    if kind == "mean":
        policy.append(f"--policy.mean_action=[{','.join(f'{v:.6g}' for v in mean_action)}]")
    return [str(BIN / "lerobot-eval"), *policy, "--policy.device=cpu", *settings.flags(out)]
