"""Wrong inputs a user will make, through the real command lines (``lerobot-train``, ``fastplus-train-tokenizer``,
``fastplus-check-tokenizer``, ``fastplus-eval-offline``, ``fastplus-demo``), each in its own subprocess: every run
must exit non-zero with a message that says what is wrong and how to fix it, before any training step and before
anything is written.

Where each check sits: flags alone are checked when LeRobot parses them (before the dataset is opened, stage
``parse``), a local FAST tokenizer folder too, and such an error is the one line LeRobot prints; what needs the
dataset (its action, cameras, the FAST tokenizer against the action dimension and ``split_every``, the ``init_from``
checkpoint) when the policy is built (before its model and the optimizer, stage ``policy``), including a sample of
the data itself (how many tokens a chunk takes). The plugin's own commands print one line, without a traceback.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import draccus
import numpy as np
import pytest
from cli_helpers import BIN, run_expecting_failure
from draccus.parsers import decoding
from draccus.utils import DecodingError
from lerobot.configs.train import TrainPipelineConfig
from lerobot.datasets import LeRobotDataset

from lerobot_fastplus.data.chunks import load_action_chunks
from lerobot_fastplus.fast import FastTokenizer
from lerobot_fastplus.policies.common import write_paligemma_layout_tokenizer
from lerobot_fastplus.policies.common.validation import show_config_errors_on_the_cli
from lerobot_fastplus.policies.pi0_fast.configuration_pi0_fast import RTC_REFUSAL
from lerobot_fastplus.tools.demo import fold_torchcodec_errors
from testing_support.synthetic_dataset import JOINT_NAMES, TASK, make_synthetic_dataset

CHUNK = 20
REPO_ID = "local/fastplus_synthetic_so100"
# The last log line of each stage of lerobot-train: an error raised in a stage must come before the next one.
NEXT_STAGE = {"parse": "Creating dataset", "policy": "Creating optimizer"}


@dataclass(frozen=True)
class Inputs:
    """Datasets and tokenizers shared by every case (made once per module)."""

    root: Path
    data: Path  # 6-D actions, one camera
    no_action: Path  # observation.state only
    fast: Path  # fitted on 10-step chunks of `data`
    fast_4d: Path  # fitted on 4 of its 6 action dimensions
    fast_5_steps: Path  # fitted on 5-step chunks
    text: Path
    files: dict[str, Path] = field(default_factory=dict)


def write_dataset(root: Path, repo_id: str, with_action: bool) -> Path:
    """A camera-less LeRobotDataset (state, optionally action), written with LeRobotDataset.create."""
    features = {"observation.state": {"dtype": "float32", "shape": (6,), "names": JOINT_NAMES}}
    if with_action:
        features["action"] = {"dtype": "float32", "shape": (6,), "names": JOINT_NAMES}
    dataset = LeRobotDataset.create(repo_id=repo_id, fps=30, features=features, root=root, use_videos=False)
    rng = np.random.default_rng(0)
    for _ in range(2):
        for _ in range(30):
            frame = {key: rng.normal(size=6).astype(np.float32) for key in features}
            dataset.add_frame({**frame, "task": TASK})
        dataset.save_episode()
    dataset.finalize()
    return root


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Inputs:
    root = tmp_path_factory.mktemp("cli_errors")
    data = root / "data"
    dataset = make_synthetic_dataset(data, repo_id=REPO_ID, n_episodes=2, episode_len=40, image_size=32)
    chunks = load_action_chunks(dataset, 10, stride=2, show_progress=False).normalized
    wrong_paths = root / "wrong_paths"
    (wrong_paths / "empty").mkdir(parents=True)
    (wrong_paths / "random.json").write_text(json.dumps({"hello": "world"}))
    tool_output = wrong_paths / "tool_output"  # fastplus-train-tokenizer's --output_dir, not its tokenizer/
    FastTokenizer.fit(chunks, vocab_size=512).save(tool_output / "tokenizer")
    step_folder = wrong_paths / "000002"  # a checkpoint step folder instead of its pretrained_model/
    (step_folder / "pretrained_model").mkdir(parents=True)
    (step_folder / "pretrained_model" / "model.safetensors").write_bytes(b"")
    return Inputs(
        root=root,
        data=data,
        no_action=write_dataset(root / "no_action", "local/no_action", with_action=False),
        fast=FastTokenizer.fit(chunks, vocab_size=512).save(root / "fast"),
        fast_4d=FastTokenizer.fit(chunks[..., :4], vocab_size=512).save(root / "fast_4d"),
        fast_5_steps=FastTokenizer.fit(chunks[:, :5], vocab_size=512).save(root / "fast_5_steps"),
        text=write_paligemma_layout_tokenizer(root / "text", TASK.split()),
        files={
            "empty": wrong_paths / "empty",
            "random.json": wrong_paths / "random.json",
            "tool_output": tool_output,
            "step_folder": step_folder,
        },
    )


def train_args(inputs: Inputs, policy: str, out: Path, *extra: str, dataset: Path | None = None) -> list[str]:
    """The tiny CPU recipe of the train CLI tests, with the correct tokenizers unless ``extra`` overrides them."""
    dataset = dataset or inputs.data
    repo_id = REPO_ID if dataset == inputs.data else f"local/{dataset.name}"
    fast_flag = "--policy.fast_tokenizer_path" if policy == "pi05_ki" else "--policy.action_tokenizer_name"
    per_policy = ["--policy.action_expert_variant=gemma_tiny"] if policy == "pi05_ki" else []
    return [
        str(BIN / "lerobot-train"),
        f"--policy.type={policy}",
        f"--dataset.repo_id={repo_id}",
        f"--dataset.root={dataset}",
        "--dataset.video_backend=pyav",
        "--policy.paligemma_variant=gemma_tiny",
        *per_policy,
        "--policy.device=cpu",
        "--policy.image_resolution=[64,64]",
        "--policy.tokenizer_max_length=48",
        f"--policy.text_tokenizer_name={inputs.text}",
        f"{fast_flag}={inputs.fast}",
        f"--policy.chunk_size={CHUNK}",
        f"--policy.n_action_steps={CHUNK}",
        "--policy.push_to_hub=false",
        "--steps=2",
        "--batch_size=2",
        "--log_freq=1",
        f"--output_dir={out}",
        "--num_workers=0",
        "--wandb.enable=false",
        *extra,  # draccus keeps the last value of a repeated flag
    ]


def assert_refused(result: subprocess.CompletedProcess, stage: str, *fragments: str) -> None:
    """Every message fragment is in the output of the (failed) run, and nothing of the stage after ``stage``."""
    text = result.stdout + result.stderr
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} missing from the output:\n{text[-4000:]}"
    assert NEXT_STAGE[stage] not in text, f"the error came after {NEXT_STAGE[stage]!r}:\n{text[-4000:]}"


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """No traceback (but those of LeRobot's warning that torchcodec cannot load, printed whenever it parses flags
    on a machine without FFmpeg), and the last line of stderr holds every fragment (the reason and the fix)."""
    stderr = fold_torchcodec_errors(result.stderr)
    assert "Traceback" not in stderr, stderr[-4000:]
    last = stderr.strip().splitlines()[-1]
    for fragment in fragments:
        assert fragment in last, f"{fragment!r} missing from the last line of stderr:\n{last}"


def refuse_training(
    inputs: Inputs, tmp_path: Path, policy: str, *extra: str, **kwargs: Path
) -> subprocess.CompletedProcess:
    out = tmp_path / "train"
    result = run_expecting_failure(train_args(inputs, policy, out, *extra, **kwargs), tmp_path)
    assert not out.exists(), "a refused run must not create its output directory"
    return result


def wrong(policy: str, value: Path | str) -> str:
    flag = "--policy.fast_tokenizer_path" if policy == "pi05_ki" else "--policy.action_tokenizer_name"
    return f"{flag}={value}"


# ---------------------------------------------------------------------------------------------------- dataset
@pytest.mark.parametrize("policy", ["pi05_ki", pytest.param("pi0_fast", marks=pytest.mark.slow)])
def test_a_dataset_without_action_is_refused(inputs, tmp_path, policy) -> None:
    result = refuse_training(inputs, tmp_path, policy, dataset=inputs.no_action)
    assert_refused(
        result, "policy", f"{policy} learns to predict the 'action' feature, but the dataset has none",
        "(its features: observation.state)", "Train on a dataset recorded with actions",
    )  # fmt: skip


def test_fitting_a_tokenizer_on_a_dataset_without_action_is_refused(inputs, tmp_path) -> None:
    out = tmp_path / "tokenizer_out"
    result = run_expecting_failure(
        [str(BIN / "fastplus-train-tokenizer"), f"--root={inputs.no_action}", f"--output_dir={out}"], tmp_path
    )
    assert "has no 'action' feature" in result.stderr and "record or convert the dataset" in result.stderr
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------- tokenizer vs data
@pytest.mark.parametrize("policy", ["pi05_ki", "pi0_fast"])
def test_a_tokenizer_fitted_on_another_action_dimension_is_refused(inputs, tmp_path, policy) -> None:
    result = refuse_training(inputs, tmp_path, policy, wrong(policy, inputs.fast_4d))
    assert_refused(
        result, "policy", f"the FAST tokenizer {wrong(policy, inputs.fast_4d)} was fitted on 4-D actions",
        "the dataset's 'action' has 6 dimensions", "fastplus-train-tokenizer --root=<dataset>",
    )  # fmt: skip


@pytest.mark.parametrize("policy", ["pi05_ki", "pi0_fast"])
def test_a_tokenizer_fitted_on_another_horizon_than_split_every_is_refused(inputs, tmp_path, policy) -> None:
    result = refuse_training(inputs, tmp_path, policy, wrong(policy, inputs.fast_5_steps))
    assert_refused(
        result, "policy", "was fitted on 5-step chunks, but split_every=10", "set --policy.split_every=5",
        "--horizon=10",
    )  # fmt: skip


@pytest.mark.slow
def test_a_tokenizer_horizon_longer_than_the_chunk_asks_for_a_longer_chunk(inputs, tmp_path) -> None:
    extra = ("--policy.chunk_size=8", "--policy.n_action_steps=8", "--policy.split_every=5")
    result = refuse_training(inputs, tmp_path, "pi05_ki", *extra)
    assert_refused(result, "policy", "raise --policy.chunk_size to at least 10 and set --policy.split_every=10")


# ---------------------------------------------------------------------------------------------------- layout flags
@pytest.mark.parametrize(
    ("policy", "extra", "stage", "message"),
    [
        ("pi05_ki", ("--policy.split_every=25",), "parse", "split_every=25 must be in [1, chunk_size=20]"),
        # pi0_fast resolves its layout (split, or core for a core checkpoint) only when the policy is built
        ("pi0_fast", ("--policy.split_every=25",), "policy", "split_every=25 must be in [1, chunk_size=20]"),
        pytest.param(
            "pi0_fast", ("--policy.max_action_tokens=4",), "parse", "cannot hold even the shortest layout",
            marks=pytest.mark.slow,
        ),
    ],
)  # fmt: skip
def test_a_chunk_layout_the_flags_cannot_hold_is_refused(inputs, tmp_path, policy, extra, stage, message) -> None:
    assert_refused(refuse_training(inputs, tmp_path, policy, *extra), stage, message)


@pytest.mark.slow
def test_chunks_that_need_more_tokens_than_allowed_stop_before_the_first_step(inputs, tmp_path) -> None:
    """A sample of the dataset is tokenized when the policy is built; during training a longer chunk only loses
    sub-chunks (tests/test_fast_action_step.py)."""
    result = refuse_training(inputs, tmp_path, "pi05_ki", "--policy.max_action_tokens=8")
    assert_refused(result, "policy", "--policy.max_action_tokens=8 is too small for this dataset", "longest")


# ---------------------------------------------------------------------------------------------------- tokenizer dirs
@pytest.mark.parametrize(
    ("policy", "name", "message"),
    [
        ("pi05_ki", "missing", "does not exist, and it is not a hub repo id"),
        ("pi0_fast", "text", "missing processor_config.json. It holds a tokenizer.json but no processor_config"),
        pytest.param("pi05_ki", "empty", "missing processor_config.json, tokenizer.json. The directory is empty",
                     marks=pytest.mark.slow),
        pytest.param("pi0_fast", "random.json", "is not a directory; a FAST tokenizer is a directory",
                     marks=pytest.mark.slow),
        pytest.param("pi05_ki", "tool_output", "looks like fastplus-train-tokenizer's output folder; the tokenizer is",
                     marks=pytest.mark.slow),
    ],
)  # fmt: skip
def test_a_path_that_is_no_fast_tokenizer_is_refused(inputs, tmp_path, policy, name, message) -> None:
    """A local folder is loaded when the flags are parsed (one line, no traceback); a path that does not exist may
    still be a hub id, tried when the policy is built."""
    path = {"missing": tmp_path / "does" / "not" / "exist", "text": inputs.text, **inputs.files}[name]
    result = refuse_training(inputs, tmp_path, policy, wrong(policy, path))
    assert_refused(result, "policy" if name == "missing" else "parse", f"{wrong(policy, path)}: ", message)
    if name != "missing":
        assert_one_line_error(result, f"{wrong(policy, path)}: ", message)


@pytest.mark.slow
def test_checking_with_a_text_tokenizer_is_refused(inputs, tmp_path) -> None:
    command = [str(BIN / "fastplus-check-tokenizer"), f"--tokenizer={inputs.text}", f"--root={inputs.data}"]
    result = run_expecting_failure(command, tmp_path)
    assert "is not a FAST tokenizer directory" in result.stderr and "looks like a text tokenizer" in result.stderr


# ---------------------------------------------------------------------------------------------------- plugin commands
@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing", "{path} does not exist (and is not a hub repo id). Pass the pretrained_model folder of a"),
        ("step_folder", "{path} is a checkpoint step folder, not a checkpoint: pass --checkpoint={path}/pretrained"),
        ("empty", "{path} holds no config.json, so it is not a policy checkpoint. Pass the pretrained_model folder"),
    ],
)  # fmt: skip
def test_evaluating_a_path_that_is_no_checkpoint_is_refused_in_one_line(inputs, tmp_path, name, message) -> None:
    path = {"missing": tmp_path / "no" / "such" / "checkpoint", **inputs.files}[name]
    out = tmp_path / "eval"
    command = [
        str(BIN / "fastplus-eval-offline"), f"--checkpoint={path}", f"--root={inputs.data}", f"--output_dir={out}"
    ]  # fmt: skip
    result = run_expecting_failure(command, tmp_path)
    assert_one_line_error(result, "error: --checkpoint=", message.format(path=path))
    assert not out.exists()


def test_a_demo_output_dir_that_cannot_be_a_directory_is_refused_in_one_line(tmp_path) -> None:
    (tmp_path / "a_file").write_text("not a directory")
    out = tmp_path / "a_file" / "demo"
    result = run_expecting_failure([str(BIN / "fastplus-demo"), f"--output_dir={out}"], tmp_path)
    assert_one_line_error(result, f"error: --output_dir={out}: {tmp_path / 'a_file'} is a file, not a directory.")
    assert (tmp_path / "a_file").read_text() == "not a directory"


# ---------------------------------------------------------------------------------------------------- init_from
@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing", "does not exist, and it is not a hub repo id (owner/name) either. Pass a checkpoint directory"),
        ("text", "model.safetensors does not exist: {path} is not a pi05 / pi05_ki checkpoint directory. Pass a"),
        pytest.param("step_folder", "looks like a checkpoint step folder; the checkpoint is {path}/pretrained_model",
                     marks=pytest.mark.slow),
    ],
)  # fmt: skip
def test_an_init_from_that_is_no_checkpoint_is_refused_before_the_model_is_built(inputs, tmp_path, name, message):
    path = {"missing": tmp_path / "no_such_checkpoint", "text": inputs.text, **inputs.files}[name]
    result = refuse_training(inputs, tmp_path, "pi05_ki", f"--policy.init_from={path}")
    assert_refused(result, "policy", f"--policy.init_from={path}: ", message.format(path=path))


# ---------------------------------------------------------------------------------------------------- RTC
def test_a_config_error_is_part_of_the_parse_error_lerobot_prints() -> None:
    """In process: draccus turns a config's ValueError into "Couldn't instantiate class ..."; the plugin's hook
    appends the reason (once, however often it is installed), which is all LeRobot's CLIs print."""
    show_config_errors_on_the_cli()  # installed at import already: must not wrap twice
    assert not hasattr(decoding.decode_dataclass.__wrapped__, "__wrapped__")
    args = ["--policy.type=pi0_fast", "--policy.action_layout=core", "--policy.rtc_config.enabled=true"]
    args.append("--dataset.repo_id=local/x")
    with pytest.raises(DecodingError) as info:
        draccus.parse(TrainPipelineConfig, args=args)
    assert "Couldn't instantiate class PI0FastConfig using the given arguments. ValueError: " in str(info.value)
    assert str(info.value).count(RTC_REFUSAL) == 1


def test_rtc_on_a_core_layout_pi0_fast_is_refused_when_the_flags_are_parsed(inputs, tmp_path) -> None:
    extra = ("--policy.action_layout=core", "--policy.rtc_config.execution_horizon=10")
    result = refuse_training(inputs, tmp_path, "pi0_fast", *extra)
    assert_refused(result, "parse", RTC_REFUSAL)


def test_rtc_on_a_core_layout_pi0_fast_in_a_config_file_is_refused(inputs, tmp_path) -> None:
    out = tmp_path / "train"
    config = {
        "dataset": {"repo_id": REPO_ID, "root": str(inputs.data)},
        "policy": {
            "type": "pi0_fast",
            "device": "cpu",
            "push_to_hub": False,
            "action_layout": "core",
            "rtc_config": {"enabled": True},
        },
        "output_dir": str(out),
    }
    path = tmp_path / "train_config.json"
    path.write_text(json.dumps(config))
    result = run_expecting_failure([str(BIN / "lerobot-train"), f"--config_path={path}"], tmp_path)
    assert_refused(result, "parse", RTC_REFUSAL)
    assert not out.exists()


@pytest.mark.slow
def test_rtc_with_fast_decoding_on_pi05_ki_is_refused(inputs, tmp_path) -> None:
    extra = ("--policy.action_decoding=fast", "--policy.rtc_config.enabled=true")
    result = refuse_training(inputs, tmp_path, "pi05_ki", *extra)
    assert_refused(result, "parse", "action_decoding='fast' cannot run with RTC", "action_decoding='flow'")
