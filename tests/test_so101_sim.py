"""``--env.type=so101_sim`` (the SO-101 MuJoCo simulator) through LeRobot's own ``lerobot-eval``, the recorder
``fastplus-record-so101``, and a tiny pi05_ki trained on a recording and evaluated closed loop (state mode: no
rendering, so no OpenGL needed)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import BIN, run, run_expecting_failure
from lerobot.datasets import LeRobotDataset
from transformers import AutoTokenizer

from lerobot_fastplus.data.chunks import load_action_chunks
from lerobot_fastplus.envs.so101_recording import record_demonstrations, recorded_seeds
from lerobot_fastplus.envs.so101_sim import REACH_CLOSE_TEXT, SO101SimEnv
from lerobot_fastplus.fast import FastTokenizer
from lerobot_fastplus.policies.common import write_paligemma_layout_tokenizer
from lerobot_fastplus.tools import record_so101

REPO = Path(__file__).resolve().parents[1]
EVAL_SEED = 100_000  # far past any recording's seeds


def lerobot_eval(tmp: Path, name: str, policy: list[str], env: list[str], episodes: int) -> dict:
    """Run lerobot-eval on so101_sim and return its overall metrics."""
    out = tmp / name
    args = [
        str(BIN / "lerobot-eval"),
        *policy,
        "--env.type=so101_sim",
        *env,
        f"--eval.n_episodes={episodes}",
        f"--eval.batch_size={episodes}",
        f"--seed={EVAL_SEED}",
        f"--output_dir={out}",
    ]
    env_vars = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_LEROBOT_HOME": str(tmp / "home")}
    result = subprocess.run(args, cwd=tmp, env=env_vars, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"lerobot-eval failed:\n{result.stdout[-2000:]}\n{result.stderr[-5000:]}"
    return json.loads((out / "eval_info.json").read_text())["overall"]


def test_config_errors_name_the_choices() -> None:
    with pytest.raises(ValueError, match="reach_close, pick_place"):
        SO101SimEnv(task="SO101PickCube-v0")
    with pytest.raises(ValueError, match="state, camera"):
        SO101SimEnv(obs_mode="pixels")
    with pytest.raises(ValueError, match="schematic, camera"):
        SO101SimEnv(video="mp4")


@pytest.mark.parametrize("task", ["reach_close", "pick_place"])
def test_state_observation_matches_features_and_the_simulator(task: str) -> None:
    cfg = SO101SimEnv(task=task)
    env = cfg.make_one()
    obs, info = env.reset(seed=3)
    assert obs["agent_pos"].shape == cfg.features["agent_pos"].shape
    assert obs["environment_state"].shape == cfg.features["environment_state"].shape
    block, grasp = env.block_pos, env.grasp_pos
    np.testing.assert_allclose(obs["agent_pos"][14:17], block, atol=1e-6)
    offset = slice(17, 20) if task == "reach_close" else slice(20, 23)
    np.testing.assert_allclose(obs["agent_pos"][offset], block - grasp, atol=1e-6)
    if task == "pick_place":
        assert f"x={env.goal_pos[0]:.2f} m" in info["task"]
    else:
        assert info["task"] == REACH_CLOSE_TEXT
    assert env.render().shape == (160, 160, 3)  # the schematic video frame, no OpenGL
    _, _, _, _, info = env.step(np.zeros(4))
    assert info["is_success"] is False


def test_scripted_expert_succeeds_and_doing_nothing_fails_through_lerobot_eval(tmp_path: Path) -> None:
    """The guard against LeRobot 0.6.1 counting every finished episode as a success when an env has no is_success."""
    expert = lerobot_eval(tmp_path, "expert", ["--policy.type=so101_baseline", "--policy.device=cpu"], [], 4)
    assert expert["pc_success"] >= 95.0
    hold = lerobot_eval(
        tmp_path, "hold", ["--policy.type=so101_baseline", "--policy.kind=hold", "--policy.device=cpu"], [], 4
    )
    assert hold["pc_success"] == 0.0
    pick_place = lerobot_eval(
        tmp_path,
        "pick_place",
        ["--policy.type=so101_baseline", "--policy.task=pick_place", "--policy.device=cpu"],
        ["--env.task=pick_place"],
        2,
    )
    assert pick_place["pc_success"] == 100.0


def test_unknown_task_is_refused_by_lerobot_eval_with_the_choices(tmp_path: Path) -> None:
    failed = run_expecting_failure(
        [str(BIN / "lerobot-eval"), "--policy.type=act", "--env.type=so101_sim", "--env.task=SO101PickPlace-v0"],
        tmp_path,
    )
    assert "use one of reach_close, pick_place" in failed.stderr.strip().splitlines()[-1]


def test_recorder_writes_a_dataset_with_the_env_features_task_text_and_seeds(tmp_path: Path, capsys) -> None:
    root = tmp_path / "reach"
    text_dir = tmp_path / "text"
    args = [f"--output_dir={root}", "--n_episodes=3", "--seed=7", "--noise=0.1", f"--text_tokenizer_dir={text_dir}"]
    assert record_so101.main(args) == 0
    dataset = LeRobotDataset("local/so101_sim", root=root)
    assert dataset.meta.total_episodes == 3 and dataset.meta.total_frames == 90
    env = SO101SimEnv()
    state = dataset.meta.features["observation.state"]
    assert state["shape"] == tuple(env.features["agent_pos"].shape) == (len(state["names"]),)
    assert state["names"][10:12] == ["gripper.command", "ee.x"] and state["names"][-1] == "cube_to_grasp.z"
    assert dataset.meta.features["action"]["shape"] == (4,)
    assert dataset[0]["task"] == REACH_CLOSE_TEXT
    assert recorded_seeds(root) == [7, 8, 9]
    assert "--seed=10" in capsys.readouterr().out
    text = AutoTokenizer.from_pretrained(text_dir)
    assert text.unk_token_id not in text(REACH_CLOSE_TEXT)["input_ids"]  # every task word has its own id
    assert text("grasp the bottle")["input_ids"].count(text.unk_token_id) == 2

    assert record_so101.main([f"--output_dir={root}", "--n_episodes=1"]) == 2  # refuses to overwrite
    assert "--overwrite=true" in capsys.readouterr().err
    assert recorded_seeds(root) == [7, 8, 9]  # untouched
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert record_so101.main([f"--output_dir={blocker / 'sub' / 'ds'}", "--n_episodes=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "writable --output_dir" in err[0]
    assert record_so101.main(["--task=stack", f"--output_dir={tmp_path / 'x'}"]) == 2
    assert "reach_close, pick_place" in capsys.readouterr().err


def test_recorder_refuses_to_replace_a_folder_that_is_not_a_recording(tmp_path: Path) -> None:
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="not an so101_sim recording"):
        record_demonstrations(SO101SimEnv(), tmp_path / "precious", "local/x", 1, overwrite=True, progress=False)
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep"


def test_camera_mode_delivers_what_its_features_say(tmp_path: Path) -> None:
    cfg = SO101SimEnv(obs_mode="camera", image_size=32)
    env = cfg.make_one()
    try:
        obs, _ = env.reset(seed=0)
    except Exception as err:  # MuJoCo raises its own error types when no OpenGL (EGL) library is installed
        pytest.skip(f"no OpenGL context for MuJoCo's camera on this machine: {err}")
    assert obs["pixels"]["front"].shape == cfg.features["pixels/front"].shape
    assert obs["pixels"]["front"].dtype == np.uint8 and obs["pixels"]["front"].std() > 0
    assert obs["agent_pos"].shape == cfg.features["agent_pos"].shape == (14,)
    assert "environment_state" not in obs and "environment_state" not in cfg.features


@pytest.mark.slow
def test_tiny_pi05_ki_trained_on_a_recording_runs_closed_loop_through_lerobot_eval(tmp_path: Path) -> None:
    root = tmp_path / "reach"
    record_demonstrations(SO101SimEnv(), root, "local/so101_sim", 4, progress=False)
    chunks = load_action_chunks(LeRobotDataset("local/so101_sim", root=root), 10, show_progress=False)
    fast = FastTokenizer.fit(chunks.normalized, vocab_size=512).save(tmp_path / "fast")
    text = write_paligemma_layout_tokenizer(tmp_path / "text", REACH_CLOSE_TEXT.split())
    out = tmp_path / "train"
    run(
        [
            str(BIN / "lerobot-train"),
            f"--config_path={REPO / 'configs' / 'pi05_ki_so101_sim.json'}",
            f"--dataset.root={root}",
            f"--policy.text_tokenizer_name={text}",
            f"--policy.fast_tokenizer_path={fast}",
            "--steps=2",
            "--save_freq=2",
            "--batch_size=2",
            f"--output_dir={out}",
        ],
        tmp_path,
    )
    ckpt = out / "checkpoints" / "last" / "pretrained_model"
    runs = {
        "flow": ["--policy.action_decoding=flow"],
        "fast": ["--policy.action_decoding=fast"],
        "ensembled": ["--policy.temporal_ensemble_coeff=0.01", "--policy.n_action_steps=1"],
        "deterministic flow": ["--policy.flow_noise_scale=0"],
    }
    for name, flags in runs.items():
        overall = lerobot_eval(tmp_path, f"eval_{name}", [f"--policy.path={ckpt}", *flags], [], 2)
        assert overall["n_episodes"] == 2 and 0.0 <= overall["pc_success"] <= 100.0
