"""The real LIBERO benchmark end to end on CPU: ``lerobot-eval --env.type=libero`` on checkpoints made by
``lerobot-train`` from ``configs/*_libero.json``, offline.

* ``fastplus-libero-setup`` installs LIBERO's config and asset link under a temporary HOME;
* ``tests/libero_record_dataset.py`` records a few short scripted episodes in the real simulator (libero_spatial,
  task 0) as a LeRobotDataset, through LeRobot's own observation processing: its features are the env's;
* ``lerobot-train --config_path=configs/<policy>_libero.json`` trains 2 steps on it, overriding only what runs a
  tiny model offline on CPU (backbone variant, local tokenizers and pi0_fast's decoding bound, which follows the
  tokenizer; device, dtype, no pretrained weights);
* ``lerobot-eval --env.type=libero`` runs one short episode per suite with the checkpoint. The test plugin
  ``tests/plugins/lerobot_env_fastplus_action_log`` logs every action the simulator receives.

The episodes are 10 steps long and the camera images 64x64 (the checkpoints were trained on 64x64 frames): on 2 CPU
cores a step takes 0.13-0.8 s and a reset 4-57 s, depending on the machine's load; resets dominate. A tiny model
trained for 2 steps scores 0%: the point is that the real benchmark runs, not the score.
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import pytest
from cli_helpers import BIN, fake_plugin_pythonpath, run
from lerobot.configs import FeatureType
from lerobot.datasets import LeRobotDataset
from lerobot.envs.configs import LiberoEnv
from lerobot.envs.utils import env_to_policy_features
from libero_helpers import LiberoInstall, require_libero, run_setup

from lerobot_fastplus.data.chunks import load_action_chunks
from lerobot_fastplus.fast import FastTokenizer
from lerobot_fastplus.policies.common import write_paligemma_layout_tokenizer

pytestmark = pytest.mark.slow

TESTS = Path(__file__).parent
CONFIGS = TESTS.parent / "configs"
ACTION_LOG_PLUGIN = TESTS / "plugins" / "lerobot_env_fastplus_action_log"
SIZE = 64  # camera height and width, recorded and evaluated
EPISODE_LENGTH = 10
SPLIT = 10  # the configs' split_every: the FAST tokenizer's horizon
TRAIN_SUITE = "libero_spatial"


@pytest.fixture(scope="module")
def libero(tmp_path_factory: pytest.TempPathFactory) -> LiberoInstall:
    """LIBERO set up by ``fastplus-libero-setup`` under a temporary HOME, its variables set for the whole module
    (for the subprocesses), and the action-log plugin on the subprocesses' path."""
    require_libero()
    install = LiberoInstall(tmp_path_factory.mktemp("libero"))
    with pytest.MonkeyPatch.context() as patch:
        for key, value in install.environ().items():
            patch.setenv(key, value)
        patch.setenv("PYTHONPATH", fake_plugin_pythonpath(install.root / "site", ACTION_LOG_PLUGIN))
        run_setup(install)
        yield install


@dataclass(frozen=True)
class SimDataset:
    root: Path
    repo_id: str
    # what the recorder measured and saw (features as the env delivered them: images HWC)
    info: dict[str, Any]
    text_tokenizer: Path


def task_language(suite: str) -> str:
    from libero.libero import benchmark  # after the module's LIBERO_CONFIG_PATH is set: importing reads it

    return benchmark.get_benchmark_dict()[suite]().get_task(0).language


@pytest.fixture(scope="module")
def sim_dataset(libero: LiberoInstall) -> SimDataset:
    out = libero.root / "dataset"
    args = [sys.executable, str(TESTS / "libero_record_dataset.py"), f"--root={out}", f"--suite={TRAIN_SUITE}"]
    result = run([*args, "--n_episodes=2", "--steps=24", f"--size={SIZE}"], libero.root)
    info = json.loads(result.stdout.strip().splitlines()[-1])
    print(
        f"LIBERO {TRAIN_SUITE} at {SIZE}x{SIZE}: resets {info['reset_s']} s, median step "
        f"{sorted(info['step_s'])[len(info['step_s']) // 2]:.3f} s"
    )
    words = {word for suite in (TRAIN_SUITE, "libero_object") for word in task_language(suite).split()}
    text = write_paligemma_layout_tokenizer(libero.root / "text_tokenizer", sorted(words))
    return SimDataset(out, info["repo_id"], info, text)


def train_from_libero_config(policy_type: str, data: SimDataset, out: Path) -> Path:
    """Fit a FAST tokenizer on the dataset (normalised as the config's policy does), then ``lerobot-train`` 2 steps
    from ``configs/<policy_type>_libero.json``; returns the checkpoint."""
    config_path = CONFIGS / f"{policy_type}_libero.json"
    policy = json.loads(config_path.read_text())["policy"]
    mode = "QUANTILES" if policy_type == "pi05_ki" else "MEAN_STD"
    dataset = LeRobotDataset(data.repo_id, root=data.root)
    chunks = load_action_chunks(dataset, SPLIT, mode=mode, stride=1, show_progress=False)
    fast = FastTokenizer.fit(chunks.normalized, vocab_size=512).save(out / "fast")
    flags = [
        f"--dataset.repo_id={data.repo_id}",
        f"--dataset.root={data.root}",
        "--policy.paligemma_variant=gemma_tiny",
        f"--policy.text_tokenizer_name={data.text_tokenizer}",
        "--policy.device=cpu",
        "--policy.dtype=float32",
    ]
    if policy_type == "pi05_ki":
        flags += ["--policy.action_expert_variant=gemma_tiny", f"--policy.fast_tokenizer_path={fast}"]
    else:
        # the decoding bound follows the tokenizer: unset, it is the longest sequence this test's tokenizer allows
        flags += [f"--policy.action_tokenizer_name={fast}"]
    if "init_from" in policy:  # no pretrained weights offline: train from scratch
        flags.append("--policy.init_from=null")
    train_dir = out / "train"
    args = [str(BIN / "lerobot-train"), f"--config_path={config_path}", *flags, f"--output_dir={train_dir}"]
    run([*args, "--steps=2", "--batch_size=2", "--save_freq=2", "--num_workers=0"], out)
    return train_dir / "checkpoints" / "last" / "pretrained_model"


@pytest.fixture(scope="module")
def pi05_ki_checkpoint(sim_dataset: SimDataset, libero: LiberoInstall) -> Path:
    return train_from_libero_config("pi05_ki", sim_dataset, libero.root / "pi05_ki")


@pytest.fixture(scope="module")
def pi0_fast_checkpoint(sim_dataset: SimDataset, libero: LiberoInstall) -> Path:
    return train_from_libero_config("pi0_fast", sim_dataset, libero.root / "pi0_fast")


def env_features() -> dict[str, list[int]]:
    """Camera and action features as LeRobot's LIBERO env config declares them at this size (channel first)."""
    env_cfg = LiberoEnv(task=TRAIN_SUITE, observation_height=SIZE, observation_width=SIZE)
    return {
        key: list(ft.shape)
        for key, ft in env_to_policy_features(env_cfg).items()
        if ft.type in (FeatureType.VISUAL, FeatureType.ACTION)
    }


def evaluate(checkpoint: Path, out: Path, suites: list[str], monkeypatch: pytest.MonkeyPatch, *flags: str) -> None:
    """``lerobot-eval`` of one episode of task 0 per suite on the real simulator; checks what reached the env,
    ``eval_info.json`` and the videos."""
    action_log = out / "actions.jsonl"
    monkeypatch.setenv("FASTPLUS_ACTION_LOG", str(action_log))
    eval_dir = out / "eval"
    args = [
        str(BIN / "lerobot-eval"),
        f"--policy.path={checkpoint}",
        "--env.type=libero",
        f"--env.task={','.join(suites)}",
        "--env.task_ids=[0]",
        f"--env.episode_length={EPISODE_LENGTH}",
        f"--env.observation_height={SIZE}",
        f"--env.observation_width={SIZE}",
        "--eval.n_episodes=1",
        "--eval.batch_size=1",
        "--policy.n_action_steps=5",  # two policy calls per episode
        f"--output_dir={eval_dir}",
        *flags,
    ]
    run(args, out)

    sent = [json.loads(line) for line in action_log.read_text().splitlines()]
    per_task = Counter(entry["task"] for entry in sent)  # tasks run one after the other, one episode each
    assert list(per_task.values()) == [EPISODE_LENGTH] * len(suites), per_task
    assert all(len(entry["action"]) == 7 and all(map(math.isfinite, entry["action"])) for entry in sent)

    info = json.loads((eval_dir / "eval_info.json").read_text())
    assert info["overall"]["n_episodes"] == len(suites)
    assert sorted((task["task_group"], task["task_id"]) for task in info["per_task"]) == sorted(
        (suite, 0) for suite in suites
    )
    for task in info["per_task"]:
        metrics = task["metrics"]
        assert len(metrics["sum_rewards"]) == len(metrics["successes"]) == 1
        assert math.isfinite(metrics["sum_rewards"][0]) and isinstance(metrics["successes"][0], bool)
        [video] = metrics["video_paths"]
        assert Path(video) == eval_dir / "videos" / f"{task['task_group']}_0" / "eval_episode_0.mp4"
        with av.open(video) as container:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        assert len(frames) == EPISODE_LENGTH and frames[0].shape == (SIZE, SIZE, 3)
        assert frames[0].std() > 10  # a rendered scene, not a blank image


@pytest.mark.parametrize("policy_type", ["pi05_ki", "pi0_fast"])
def test_the_checkpoints_features_are_the_real_envs(
    policy_type: str, sim_dataset: SimDataset, request: pytest.FixtureRequest
) -> None:
    """The policy built by lerobot-train from the JSON config and the simulator's frames has exactly the env's
    cameras, state and action (none of them written by hand here)."""
    checkpoint = request.getfixturevalue(f"{policy_type}_checkpoint")
    config = json.loads((checkpoint / "config.json").read_text())
    features = {key: ft["shape"] for key, ft in {**config["input_features"], **config["output_features"]}.items()}
    recorded = sim_dataset.info["features"]  # images height, width, channels
    assert features == {key: [*shape[2:], *shape[:2]] if "images" in key else shape for key, shape in recorded.items()}
    assert {key: shape for key, shape in features.items() if key != "observation.state"} == env_features()
    assert config["image_resolution"] == [224, 224]  # the JSON's, not overridden


def test_pi05_ki_flow_on_libero_spatial_and_libero_object(
    pi05_ki_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    evaluate(pi05_ki_checkpoint, tmp_path, ["libero_spatial", "libero_object"], monkeypatch)


def test_pi05_ki_fast_decoding_on_libero_spatial(
    pi05_ki_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    evaluate(pi05_ki_checkpoint, tmp_path, ["libero_spatial"], monkeypatch, "--policy.action_decoding=fast")


def test_pi0_fast_on_libero_spatial(pi0_fast_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    evaluate(pi0_fast_checkpoint, tmp_path, ["libero_spatial"], monkeypatch)
