"""``lerobot-eval --policy.path=<checkpoint>`` for the plugin's policies, on LIBERO's interface (CPU, offline).

LIBERO's simulator cannot run here, so:

* in process, each policy is built from LeRobot's own LIBERO env config (``make_policy(cfg, env_cfg=LiberoEnv)``,
  as lerobot-eval builds it) and acts on a batch in LIBERO's gym format, passed through LeRobot's
  ``preprocess_observation``, LIBERO's env processor (``LiberoProcessorStep``) and the policy's processors;
* in subprocesses, ``lerobot-train`` trains 2 steps on a LIBERO-shaped synthetic LeRobotDataset and ``lerobot-eval``
  runs the checkpoint on ``tests/plugins/lerobot_env_fastplus_test`` (LeRobot's ``libero`` env config with a
  stand-in simulator), which LeRobot finds through its ``lerobot_env_`` plugin discovery.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import torch
from cli_helpers import BIN, fake_plugin_pythonpath, run
from conftest import smooth_chunks
from lerobot.configs import FeatureType, PolicyFeature, PreTrainedConfig
from lerobot.datasets import LeRobotDataset
from lerobot.envs import make_env_pre_post_processors, preprocess_observation
from lerobot.envs.configs import LiberoEnv
from lerobot.policies import make_policy, make_pre_post_processors
from lerobot.processor import LiberoProcessorStep

from lerobot_fastplus.data.chunks import load_action_chunks
from lerobot_fastplus.fast import FastTokenizer
from lerobot_fastplus.policies.common import write_paligemma_layout_tokenizer
from lerobot_fastplus.policies.pi0_fast.configuration_pi0_fast import PI0FastConfig
from lerobot_fastplus.policies.pi05_ki.configuration_pi05_ki import PI05KIConfig
from testing_support.synthetic_dataset import make_synthetic_dataset

LIBERO_TASK = "pick up the black bowl and place it on the plate"
SIDE = 32  # camera height and width
ACTION_DIM, STATE_DIM = 7, 8  # LIBERO: 6-D end-effector delta + gripper; LiberoProcessorStep's 8-D state
CHUNK, SPLIT = 20, 10
ENV_PLUGIN = Path(__file__).parent / "plugins" / "lerobot_env_fastplus_test"
ENV_TYPE = "fastplus_libero_test"
SUCCESS_AFTER, EPISODE_LENGTH = 4, 8  # the test env's scoring: see its docstring
REPO_ID = "local/fastplus_libero_like"
# What a checkpoint trained on a LIBERO LeRobotDataset (HuggingFaceVLA/libero's layout) carries.
LIBERO_DATASET_FEATURES = {
    "observation.images.image": PolicyFeature(FeatureType.VISUAL, (3, SIDE, SIDE)),
    "observation.images.image2": PolicyFeature(FeatureType.VISUAL, (3, SIDE, SIDE)),
    "observation.state": PolicyFeature(FeatureType.STATE, (STATE_DIM,)),
}


# --- in process: both policies built from LeRobot's LIBERO env config ---------------------------------------------


@dataclass(frozen=True)
class Tokenizers:
    text: Path
    fast: Path


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory: pytest.TempPathFactory) -> Tokenizers:
    root = tmp_path_factory.mktemp("libero_tokenizers")
    fast = FastTokenizer.fit(np.clip(smooth_chunks(400, SPLIT, ACTION_DIM), -1, 1), vocab_size=400).save(root / "fast")
    return Tokenizers(write_paligemma_layout_tokenizer(root / "text", LIBERO_TASK.split()), fast)


def tiny_config(policy_type: str, tokenizers: Tokenizers) -> PreTrainedConfig:
    common: dict[str, Any] = {
        "device": "cpu",
        "paligemma_variant": "gemma_tiny",
        "chunk_size": CHUNK,
        "n_action_steps": CHUNK,
        "split_every": SPLIT,
        "image_resolution": (64, 64),
        "tokenizer_max_length": 40,
        "text_tokenizer_name": str(tokenizers.text),
    }
    if policy_type == "pi05_ki":
        return PI05KIConfig(action_expert_variant="gemma_tiny", fast_tokenizer_path=str(tokenizers.fast), **common)
    return PI0FastConfig(action_tokenizer_name=str(tokenizers.fast), max_action_tokens=96, **common)


def unit_stats() -> dict[str, dict[str, torch.Tensor]]:
    def stat(dim: int) -> dict[str, torch.Tensor]:
        ones = torch.ones(dim)
        return {"mean": 0 * ones, "std": ones, "min": -ones, "max": ones, "q01": -ones, "q99": ones}

    return {"observation.state": stat(STATE_DIM), "action": stat(ACTION_DIM)}


def libero_gym_observation(batch_size: int, seed: int) -> dict[str, Any]:
    """A batch as LIBERO's vector env returns it (``obs_type="pixels_agent_pos"``, default camera mapping)."""
    rng = np.random.default_rng(seed)
    quat = rng.normal(size=(batch_size, 4))
    return {
        "pixels": {
            camera: rng.integers(0, 256, size=(batch_size, SIDE, SIDE, 3), dtype=np.uint8)
            for camera in ("image", "image2")
        },
        "robot_state": {
            "eef": {
                "pos": rng.normal(size=(batch_size, 3)),
                "quat": quat / np.linalg.norm(quat, axis=1, keepdims=True),
                "mat": np.tile(np.eye(3), (batch_size, 1, 1)),
            },
            "gripper": {"qpos": rng.uniform(-0.04, 0.04, size=(batch_size, 2)), "qvel": np.zeros((batch_size, 2))},
            "joints": {"pos": rng.normal(size=(batch_size, 7)), "vel": np.zeros((batch_size, 7))},
        },
    }


@pytest.mark.parametrize("features", ["from_libero_dataset", "from_env_only"])
@pytest.mark.parametrize("policy_type", ["pi05_ki", "pi0_fast"])
def test_policy_built_from_libero_env_config_acts_on_libero_observations(
    policy_type: str, features: str, tokenizers: Tokenizers
) -> None:
    """``from_libero_dataset``: input features and stats of a checkpoint trained on a LIBERO dataset, the action
    feature from the env (lerobot-eval's case); ``from_env_only``: every feature from the env config, no stats
    (``lerobot-eval --policy.type=... --env.type=libero`` without a checkpoint)."""
    env_cfg = LiberoEnv(task="libero_spatial", observation_height=SIDE, observation_width=SIDE)
    cfg = tiny_config(policy_type, tokenizers)
    stats = None
    if features == "from_libero_dataset":
        cfg.input_features = dict(LIBERO_DATASET_FEATURES)
        stats = unit_stats()
    policy = make_policy(cfg, env_cfg=env_cfg)
    assert cfg.output_features == {"action": PolicyFeature(FeatureType.ACTION, (ACTION_DIM,))}
    cameras = {key: ft.shape for key, ft in cfg.input_features.items() if ft.type is FeatureType.VISUAL}
    assert cameras == {"observation.images.image": (3, SIDE, SIDE), "observation.images.image2": (3, SIDE, SIDE)}

    preprocessor, postprocessor = make_pre_post_processors(cfg, dataset_stats=stats)
    env_preprocessor, env_postprocessor = make_env_pre_post_processors(env_cfg, cfg)
    assert [type(step) for step in env_preprocessor.steps] == [LiberoProcessorStep]

    batch_size = 2
    observation = preprocess_observation(libero_gym_observation(batch_size, seed=0))
    observation["task"] = [LIBERO_TASK] * batch_size
    observation = env_preprocessor(observation)
    assert observation["observation.state"].shape == (batch_size, STATE_DIM)
    policy.eval()
    with torch.inference_mode():
        action = policy.select_action(preprocessor(observation))
    action = env_postprocessor({"action": postprocessor(action)})["action"]
    assert action.shape == (batch_size, ACTION_DIM)
    assert torch.isfinite(action).all()


# --- subprocesses: lerobot-train, then lerobot-eval on the LIBERO-shaped test env plugin ----------------------------


@dataclass(frozen=True)
class LiberoLike:
    """A LIBERO-shaped LeRobotDataset (cameras ``image``/``image2``, 8-D state, 7-D action) and a text tokenizer
    that knows its task. The tokenizer directory must outlive every use of the checkpoint: LeRobot's tokenizer
    step saves only its path."""

    root: Path
    text: Path


@pytest.fixture(scope="module")
def libero_like(tmp_path_factory: pytest.TempPathFactory) -> LiberoLike:
    root = tmp_path_factory.mktemp("libero_like")
    make_synthetic_dataset(
        root / "dataset",
        repo_id=REPO_ID,
        n_episodes=3,
        episode_len=40,
        image_size=SIDE,
        cameras=("image", "image2"),
        action_dim=ACTION_DIM,
        state_dim=STATE_DIM,
        task=LIBERO_TASK,
    )
    return LiberoLike(root / "dataset", write_paligemma_layout_tokenizer(root / "text", LIBERO_TASK.split()))


def train_checkpoint(policy_type: str, data: LiberoLike, out: Path, mode: str, *flags: str) -> Path:
    """Fit a FAST tokenizer on the dataset's actions (normalised like the policy does: ``mode``), run
    ``lerobot-train`` for 2 steps and return the checkpoint."""
    dataset = LeRobotDataset(REPO_ID, root=data.root, video_backend="pyav")
    chunks = load_action_chunks(dataset, SPLIT, mode=mode, stride=2, show_progress=False)
    fast = FastTokenizer.fit(chunks.normalized, vocab_size=512).save(out / "fast")
    fast_flag = "fast_tokenizer_path" if policy_type == "pi05_ki" else "action_tokenizer_name"
    args = [
        str(BIN / "lerobot-train"),
        f"--policy.type={policy_type}",
        f"--dataset.repo_id={REPO_ID}",
        f"--dataset.root={data.root}",
        "--dataset.video_backend=pyav",
        "--policy.paligemma_variant=gemma_tiny",
        "--policy.device=cpu",
        "--policy.image_resolution=[64,64]",
        "--policy.tokenizer_max_length=48",
        f"--policy.text_tokenizer_name={data.text}",
        f"--policy.{fast_flag}={fast}",
        f"--policy.chunk_size={CHUNK}",
        f"--policy.n_action_steps={CHUNK}",
        "--policy.push_to_hub=false",
        "--steps=2",
        "--batch_size=2",
        "--save_freq=2",
        f"--output_dir={out / 'train'}",
        "--num_workers=0",
        "--wandb.enable=false",
        *flags,
    ]
    run(args, out)
    return out / "train" / "checkpoints" / "last" / "pretrained_model"


@pytest.fixture(scope="module")
def pi05_ki_checkpoint(libero_like: LiberoLike, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pi05_ki")
    return train_checkpoint("pi05_ki", libero_like, out, "QUANTILES", "--policy.action_expert_variant=gemma_tiny")


def printed_overall_metrics(log: str) -> dict[str, Any]:
    """The dict lerobot-eval logs on the line after ``Overall Aggregated Metrics:``."""
    lines = log.splitlines()
    header = next((i for i, line in enumerate(lines) if "Overall Aggregated Metrics:" in line), None)
    assert header is not None, f"lerobot-eval printed no overall metrics:\n{log[-3000:]}"
    line = lines[header + 1]
    return ast.literal_eval(line[line.index("{") :])


def evaluate(
    checkpoint: Path, out: Path, monkeypatch: pytest.MonkeyPatch, policy_flags: Sequence[str] = ()
) -> dict[str, Any]:
    """``lerobot-eval`` of 2 episodes in one batch of 2 envs on the test env; checks the printed metrics,
    ``eval_info.json`` and the videos against the env's scoring, returns ``eval_info.json``."""
    monkeypatch.setenv("PYTHONPATH", fake_plugin_pythonpath(out / "site", ENV_PLUGIN))
    eval_dir = out / "eval"
    args = [
        str(BIN / "lerobot-eval"),
        f"--policy.path={checkpoint}",
        f"--env.type={ENV_TYPE}",
        "--env.task=libero_spatial",
        f"--env.instruction={LIBERO_TASK}",
        f"--env.episode_length={EPISODE_LENGTH}",
        f"--env.success_after={SUCCESS_AFTER}",
        "--eval.n_episodes=2",
        "--eval.batch_size=2",
        "--eval.use_async_envs=false",
        f"--output_dir={eval_dir}",
        *policy_flags,
    ]
    result = run(args, out)
    info = json.loads((eval_dir / "eval_info.json").read_text())
    overall = info["overall"]
    assert printed_overall_metrics(result.stdout + result.stderr) == overall
    scores = {key: overall[key] for key in ("n_episodes", "avg_sum_reward", "avg_max_reward", "pc_success")}
    assert scores == {"n_episodes": 2, "avg_sum_reward": SUCCESS_AFTER, "avg_max_reward": 1.0, "pc_success": 100.0}
    [task] = info["per_task"]
    assert (task["task_group"], task["task_id"]) == ("libero_spatial", 0)
    assert task["metrics"]["sum_rewards"] == [SUCCESS_AFTER] * 2
    assert task["metrics"]["successes"] == [True, True]

    videos = [eval_dir / "videos" / "libero_spatial_0" / f"eval_episode_{i}.mp4" for i in range(2)]
    assert overall["video_paths"] == [str(video) for video in videos]
    for video in videos:
        with av.open(str(video)) as container:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        # one frame after the reset and one after each step, up to the one that ended the episode
        assert len(frames) == SUCCESS_AFTER, video
        assert frames[0].shape == (SIDE, SIDE, 3)
    return info


def test_lerobot_eval_runs_a_pi05_ki_checkpoint_on_a_libero_shaped_env(
    pi05_ki_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # two policy calls per episode: an eval-time override of the checkpoint's config, as users pass them
    evaluate(pi05_ki_checkpoint, tmp_path, monkeypatch, ["--policy.n_action_steps=2"])


@pytest.mark.slow
def test_lerobot_eval_runs_pi05_ki_with_fast_decoding(
    pi05_ki_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    evaluate(
        pi05_ki_checkpoint,
        tmp_path,
        monkeypatch,
        ["--policy.action_decoding=fast", "--policy.max_action_tokens=64", f"--policy.n_action_steps={CHUNK}"],
    )


@pytest.mark.slow
def test_lerobot_eval_runs_a_pi0_fast_checkpoint_on_a_libero_shaped_env(
    libero_like: LiberoLike, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pi0_fast normalises actions with MEAN_STD; its tokenizer is fitted on the same normalisation
    checkpoint = train_checkpoint("pi0_fast", libero_like, tmp_path, "MEAN_STD")
    evaluate(checkpoint, tmp_path, monkeypatch, ["--policy.n_action_steps=2"])
