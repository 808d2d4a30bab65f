"""``lerobot-rollout --policy.path=<checkpoint> --robot.type=...`` end to end, on a hardware-free SO-100 follower.

The robot is a real LeRobot robot plugin (``tests/plugins/lerobot_robot_fastplus_mock_so100``), discovered the way
an installed ``lerobot_robot_*`` distribution is, so the rollout runs unmodified: plugin discovery, policy loading
from the checkpoint, robot features to policy features, sync and RTC inference, the recording strategy, teardown.
Mocking the Feetech motor bus instead would need patching inside the ``lerobot-rollout`` process. The mock keeps
the SO-100 command path (``max_relative_target`` through LeRobot's ``ensure_safe_goal_position``, then the bus
clamp) and writes every command it receives to a JSON-lines record that the tests check.

Checkpoints: ``lerobot-train`` for 2 steps (tiny variant, CPU) on the synthetic SO-100-like dataset, whose joint and
camera names (``<joint>.pos``, ``front``) are the robot's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import BIN, fake_plugin_pythonpath, run
from lerobot.datasets import LeRobotDataset

from lerobot_fastplus.data.chunks import load_action_chunks
from lerobot_fastplus.fast import FastTokenizer
from lerobot_fastplus.policies.common import write_paligemma_layout_tokenizer
from lerobot_fastplus.policies.pi0_fast.configuration_pi0_fast import RTC_REFUSAL
from lerobot_fastplus.policies.pi05_ki.configuration_pi05_ki import FAST_DECODING_RTC_REFUSAL
from testing_support.synthetic_dataset import JOINT_NAMES, TASK, make_synthetic_dataset

PLUGIN = Path(__file__).resolve().parent / "plugins" / "lerobot_robot_fastplus_mock_so100"
ROBOT_TYPE = "fastplus_mock_so100"
REPO_ID = "local/fastplus_synthetic_so100"
JOINTS = [name.removesuffix(".pos") for name in JOINT_NAMES]
# The SO-100 follower's normalised ranges (arm joints -100..100, gripper 0..100): the mock's bus clamps to them.
LOW = np.array([0.0 if joint == "gripper" else -100.0 for joint in JOINTS])
HIGH = np.full(len(JOINTS), 100.0)
# Pose the mock robot starts in (its config's default), in JOINTS order.
INITIAL = np.array([0.0, -35.0, 35.0, -10.0, 0.0, 30.0])
CHUNK, FPS, DURATION = 20, 10, 4


# ---------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic dataset plus FAST tokenizers (QUANTILES for pi05_ki, MEAN_STD for pi0_fast) and a text
    tokenizer, in one folder."""
    root = tmp_path_factory.mktemp("rollout_assets")
    dataset = make_synthetic_dataset(root / "dataset", repo_id=REPO_ID, n_episodes=2, episode_len=40, image_size=32)
    for name, mode in (("fast_quantiles", "QUANTILES"), ("fast_mean_std", "MEAN_STD")):
        chunks = load_action_chunks(dataset, 10, stride=2, mode=mode, show_progress=False)
        FastTokenizer.fit(chunks.normalized, vocab_size=512).save(root / name)
    write_paligemma_layout_tokenizer(root / "text", TASK.split())
    return root


def train(assets: Path, policy_type: str, *policy_flags: str) -> Path:
    """``lerobot-train`` for 2 steps; returns the checkpoint's ``pretrained_model`` folder."""
    out = assets / f"train_{policy_type}"
    args = [
        str(BIN / "lerobot-train"),
        f"--policy.type={policy_type}",
        f"--dataset.repo_id={REPO_ID}",
        f"--dataset.root={assets / 'dataset'}",
        "--dataset.video_backend=pyav",
        "--policy.paligemma_variant=gemma_tiny",
        "--policy.device=cpu",
        "--policy.image_resolution=[64,64]",
        f"--policy.text_tokenizer_name={assets / 'text'}",
        f"--policy.chunk_size={CHUNK}",
        f"--policy.n_action_steps={CHUNK}",
        "--policy.push_to_hub=false",
        *policy_flags,
        "--steps=2",
        "--batch_size=2",
        "--save_freq=2",
        f"--output_dir={out}",
        "--num_workers=0",
        "--wandb.enable=false",
    ]
    run(args, assets)
    return out / "checkpoints" / "last" / "pretrained_model"


@pytest.fixture(scope="module")
def pi05_ki_checkpoint(synthetic: Path) -> Path:
    return train(
        synthetic,
        "pi05_ki",
        "--policy.action_expert_variant=gemma_tiny",
        "--policy.tokenizer_max_length=48",
        f"--policy.fast_tokenizer_path={synthetic / 'fast_quantiles'}",
    )


@pytest.fixture(scope="module")
def pi0_fast_checkpoint(synthetic: Path) -> Path:
    return train(
        synthetic,
        "pi0_fast",
        "--policy.tokenizer_max_length=64",
        f"--policy.action_tokenizer_name={synthetic / 'fast_mean_std'}",
    )


# ---------------------------------------------------------------------------------------------------- helpers
def rollout(checkpoint: Path, tmp: Path, *flags: str) -> tuple[subprocess.CompletedProcess, Path]:
    """Run ``lerobot-rollout`` on the mock robot for DURATION seconds at FPS; returns the process and the robot's
    record path. stdin is /dev/null so LeRobot's terminal key listener stays off."""
    record = tmp / "robot_record.jsonl"
    args = [
        str(BIN / "lerobot-rollout"),
        f"--policy.path={checkpoint}",
        f"--robot.type={ROBOT_TYPE}",
        "--robot.id=test_follower",
        f"--robot.record_path={record}",
        f"--task={TASK}",
        f"--fps={FPS}",
        f"--duration={DURATION}",
        "--play_sounds=false",
        *flags,
    ]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_LEROBOT_HOME": str(tmp / "hf_lerobot_home"),
        "PYTHONPATH": fake_plugin_pythonpath(tmp / "site", PLUGIN),
    }
    result = subprocess.run(
        args, cwd=tmp, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600
    )
    return result, record


def succeeded(result: subprocess.CompletedProcess) -> str:
    """The run's log; fails with its tail unless it exited 0 and finished cleanly."""
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"lerobot-rollout failed:\n{log[-6000:]}"
    assert "Rollout finished" in log, log[-3000:]
    # The RTC thread retries inference errors and can end a run early with exit code 0: none may occur.
    for problem in ("RTC inference error", "Fatal error in RTC thread"):
        assert problem not in log, f"{problem!r} in the rollout log:\n{log[-6000:]}"
    return log


def robot_commands(record: Path, max_relative_target: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Check the robot's record: connected once, then commands, then disconnected by the rollout (the mock has no
    disconnect-on-garbage-collection). Every command names exactly the six joints, is finite, and what reached the
    motors is inside the SO-100 limits (and within ``max_relative_target`` of the present position when set).
    Returns the requested and sent positions, [N, 6] in JOINTS order."""
    assert record.is_file(), "the robot was never connected (no record written)"
    events = [json.loads(line) for line in record.read_text().splitlines()]
    assert [e["event"] for e in events if e["event"] != "action"] == ["connect", "disconnect"], events[-1]
    assert events[0]["event"] == "connect" and events[-1]["event"] == "disconnect"
    actions = events[1:-1]
    assert actions, "the rollout sent no action"
    for event in actions:
        assert event["keys"] == sorted(JOINT_NAMES), event["keys"]
    requested = np.array([[e["requested"][j] for j in JOINTS] for e in actions])
    sent = np.array([[e["sent"][j] for j in JOINTS] for e in actions])
    assert np.isfinite(requested).all(), "non-finite action sent to the robot"
    assert ((sent >= LOW) & (sent <= HIGH)).all(), sent[((sent < LOW) | (sent > HIGH)).any(axis=1)]
    if max_relative_target is not None:
        present = np.vstack([INITIAL, sent[:-1]])
        assert np.abs(sent - present).max() <= max_relative_target + 1e-6
    return requested, sent


def policy_made(requested: np.ndarray) -> None:
    """The commands came from the policy: they vary and do not sit at the starting pose."""
    assert len(np.unique(requested.round(3), axis=0)) > 1, "every command is the same"
    assert not np.allclose(requested[0], INITIAL), "the first command is the starting pose"


def locate(block: np.ndarray, commands: np.ndarray, start: int) -> int:
    """Index of the first run of ``commands`` (from ``start``) equal to ``block``."""
    for i in range(start, len(commands) - len(block) + 1):
        if np.allclose(commands[i : i + len(block)], block, atol=1e-3):
            return i
    raise AssertionError(f"recorded actions {block[:2]}... are not a run of the robot's commands after #{start}")


# ---------------------------------------------------------------------------------------------------- pi05_ki
def test_pi05_ki_sync_rollout_drives_the_robot(pi05_ki_checkpoint: Path, tmp_path: Path) -> None:
    result, record = rollout(
        pi05_ki_checkpoint, tmp_path, "--robot.max_relative_target=10.0", "--return_to_initial_position=false"
    )
    log = succeeded(result)
    assert "Creating inference engine: sync" in log
    requested, _ = robot_commands(record, max_relative_target=10.0)
    # no return to the start pose: every command is the policy's, at most one per control tick
    policy_made(requested)
    assert 2 <= len(requested) <= FPS * DURATION + 1, len(requested)


def test_pi05_ki_reports_ar_vs_flow_disagreement_during_a_rollout(pi05_ki_checkpoint: Path, tmp_path: Path) -> None:
    result, record = rollout(pi05_ki_checkpoint, tmp_path, "--policy.report_disagreement=true")
    log = succeeded(result)
    values = [
        float(value)
        for line in log.splitlines()
        if "AR-vs-flow disagreement" in line
        for value in line.rsplit(":", 1)[1].split(",")
    ]
    assert values, "no disagreement was logged"
    assert np.isfinite(values).all() and min(values) >= 0
    requested, _ = robot_commands(record)
    policy_made(requested)


def test_pi05_ki_rtc_rollout_records_episodes(pi05_ki_checkpoint: Path, tmp_path: Path) -> None:
    """RTC inference with the episodic recording strategy, two cameras (the policy uses ``front``), 2 episodes."""
    dataset_root = tmp_path / "rollout_dataset"
    episode_s = DURATION  # the first chunk must arrive within it: LeRobot cannot save an empty episode
    result, record = rollout(
        pi05_ki_checkpoint,
        tmp_path,
        "--inference.type=rtc",
        "--inference.rtc.execution_horizon=10",
        "--inference.rtc.max_guidance_weight=10.0",
        "--inference.queue_threshold=10",
        "--robot.camera_names=[front,wrist]",
        "--robot.camera_height=48",
        "--strategy.type=episodic",
        "--dataset.repo_id=local/rollout_fastplus_mock",
        f"--dataset.root={dataset_root}",
        f"--dataset.single_task={TASK}",
        "--dataset.num_episodes=2",
        f"--dataset.episode_time_s={episode_s}",
        "--dataset.reset_time_s=0",
        f"--dataset.fps={FPS}",
        "--dataset.video=false",
        "--dataset.push_to_hub=false",
    )
    log = succeeded(result)
    assert "Creating inference engine: rtc" in log and "RTC inference thread started" in log
    requested, sent = robot_commands(record)
    policy_made(requested)
    np.testing.assert_allclose(sent[-1], INITIAL, atol=1e-4)  # teardown returned the arm to its start pose

    dataset = LeRobotDataset("local/rollout_fastplus_mock", root=dataset_root, video_backend="pyav")
    assert (dataset.meta.robot_type, dataset.fps, dataset.num_episodes) == (ROBOT_TYPE, FPS, 2)
    features = dataset.meta.features
    assert features["action"]["names"] == JOINT_NAMES and features["observation.state"]["names"] == JOINT_NAMES
    for camera in ("front", "wrist"):
        assert tuple(features[f"observation.images.{camera}"]["shape"]) == (48, 64, 3)
    assert list(dataset.meta.tasks.index) == [TASK]
    frame = dataset[0]
    assert tuple(frame["observation.images.wrist"].shape) == (3, 48, 64) and frame["task"] == TASK

    # Every recorded frame is a command the robot received, in order, and its state the pose just before it.
    table = dataset.hf_dataset.with_format("numpy")
    actions, states = np.stack(table["action"]), np.stack(table["observation.state"])
    episodes = np.asarray(table["episode_index"]).reshape(-1)
    assert dataset.num_frames == len(actions) == int(np.sum(dataset.meta.episodes["length"]))
    present = np.vstack([INITIAL, sent[:-1]])
    start = 0
    for episode in range(2):
        rows = episodes == episode
        assert 1 <= rows.sum() <= episode_s * FPS + 1, rows.sum()
        start = locate(actions[rows], requested, start)
        np.testing.assert_allclose(states[rows], present[start : start + rows.sum()], atol=1e-3)
        start += rows.sum()


@pytest.mark.slow
def test_pi05_ki_fast_decoding_refuses_rtc_through_the_cli(pi05_ki_checkpoint: Path, tmp_path: Path) -> None:
    result, record = rollout(pi05_ki_checkpoint, tmp_path, "--inference.type=rtc", "--policy.action_decoding=fast")
    assert result.returncode != 0
    assert FAST_DECODING_RTC_REFUSAL in result.stderr, result.stderr[-3000:]
    assert not record.exists(), "the robot was connected before the refusal"


# ---------------------------------------------------------------------------------------------------- pi0_fast
@pytest.mark.slow
def test_pi0_fast_sync_rollout_drives_the_robot(synthetic: Path, pi0_fast_checkpoint: Path, tmp_path: Path) -> None:
    result, record = rollout(pi0_fast_checkpoint, tmp_path, "--return_to_initial_position=false")
    log = succeeded(result)
    assert "Creating inference engine: sync" in log
    requested, _ = robot_commands(record)
    assert 1 <= len(requested) <= FPS * DURATION + 1, len(requested)
    if "held the normalised origin" in log:
        # 2 training steps may decode no sub-chunk: the fallback (reported in the log) is the dataset's mean action
        action_mean = json.loads((synthetic / "dataset" / "meta" / "stats.json").read_text())["action"]["mean"]
        np.testing.assert_allclose(requested[0], action_mean, atol=1e-3)
    else:
        policy_made(requested)


@pytest.mark.slow
def test_a_core_layout_pi0_fast_refuses_rtc_through_the_cli(pi0_fast_checkpoint: Path, tmp_path: Path) -> None:
    """A split-layout pi0_fast runs RTC (test_pi0_fast_rtc.py); the same weights decoded with core's layout (one
    FAST sequence per chunk, as a core checkpoint is) have no sub-chunk to force."""
    core = tmp_path / "core_layout"
    shutil.copytree(pi0_fast_checkpoint, core)
    config = json.loads((core / "config.json").read_text())
    (core / "config.json").write_text(json.dumps({**config, "action_layout": "core"}))
    result, record = rollout(core, tmp_path, "--inference.type=rtc")
    assert result.returncode != 0
    assert RTC_REFUSAL in result.stderr, result.stderr[-3000:]
    assert not record.exists(), "the robot was connected before the refusal"
