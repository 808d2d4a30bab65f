"""pi0_fast under RTC: prefix conditioning on split-token boundaries (tiny variant, CPU).

The leftover actions that cover the inference delay are re-encoded as whole FAST sub-chunks and forced after BOS in
the prompt's forward pass; the rest of the chunk is decoded under the exact grammar. Core-layout checkpoints refuse
RTC. ``lerobot-rollout --inference.type=rtc`` runs on the hardware-free SO-100 of ``test_rollout_cli``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from lerobot.policies.factory import make_pre_post_processors
from lerobot.policies.rtc.configuration_rtc import RTCConfig
from pi0_fast_helpers import CHUNK, DIM, SPLIT, action_chunks, make_assets, make_config, raw_batch
from test_rollout_cli import pi0_fast_checkpoint, policy_made, robot_commands, rollout, succeeded, synthetic

from lerobot_fastplus.policies.pi0_fast import modeling_pi0_fast
from lerobot_fastplus.policies.pi0_fast.configuration_pi0_fast import RTC_REFUSAL, PI0FastConfig
from lerobot_fastplus.policies.pi0_fast.modeling_pi0_fast import PI0FastPolicy

__all__ = ["pi0_fast_checkpoint", "synthetic"]  # fixtures of test_rollout_cli, used here


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("pi0_fast_rtc"))


@pytest.fixture(scope="module")
def policy(assets):
    torch.manual_seed(0)
    return PI0FastPolicy(make_config(assets, rtc_config=RTCConfig(execution_horizon=CHUNK)))


@pytest.fixture(scope="module")
def observation(assets, policy):
    preprocessor, _ = make_pre_post_processors(policy.config, dataset_stats=assets.stats)
    return preprocessor(raw_batch(2, seed=20, with_action=False))


def leftover(batch_size: int = 2, steps: int = CHUNK, seed: int = 3) -> torch.Tensor:
    """Normalised actions the previous chunk still has queued (the test stats are the identity)."""
    return torch.tensor(action_chunks(batch_size, seed)[:, :steps], dtype=torch.float32)


# ---------------------------------------------------------------------------------------------------- decoding
def test_the_forced_prefix_decodes_to_the_reencoded_leftover_and_the_rest_completes(policy, observation) -> None:
    previous = leftover()
    chunk = policy.predict_action_chunk(observation, inference_delay=3, prev_chunk_left_over=previous).numpy()
    report = policy.last_decode
    assert report.forced_steps == SPLIT  # delay 3 < split_every: one whole sub-chunk
    fast = policy.fast_tokenizer
    roundtrip = fast.decode(fast.encode(previous[:, :SPLIT].numpy()), time_horizon=SPLIT, action_dim=DIM).actions
    np.testing.assert_allclose(chunk[:, :SPLIT], roundtrip, atol=1e-6)
    # the tokenizer's rounding: each orthonormal DCT coefficient is off by at most 0.5 / scale
    assert np.abs(chunk[:, :SPLIT] - previous[:, :SPLIT].numpy()).max() <= 0.5 * np.sqrt(SPLIT) / fast.scale
    # the free part: generated (never the forced tokens again), complete under the grammar, ended by EOS
    assert (report.forced > 0).all() and (report.generated >= 2).all()
    assert report.parsed.step_valid.all() and report.parsed.ended.all()
    assert (report.generated == report.lengths - report.forced).all()


def test_forced_tokens_share_the_prompts_pass_and_padding_changes_nothing(policy, observation, monkeypatch) -> None:
    """Rows with forced prefixes of different lengths (left-padded) decode as each row alone, with and without the KV
    cache, and only the generated tokens take a decoding step."""
    steps = []
    step = modeling_pi0_fast.cached_language_model_step
    monkeypatch.setattr(modeling_pi0_fast, "cached_language_model_step", lambda *a: steps.append(1) or step(*a))
    previous = leftover(seed=5)
    previous[1] = 0.3  # a held pose takes fewer tokens than a moving one
    both = policy.predict_action_chunk(observation, inference_delay=10, prev_chunk_left_over=previous)
    tokens = policy.last_decode.tokens
    assert len(set(policy.last_decode.forced)) == 2, "the two rows should force different numbers of tokens"
    assert len(steps) == policy.last_decode.generated.max() - 1  # none for a forced token
    policy.config.use_kv_cache = False
    try:
        for row in range(2):
            alone = {k: v[row : row + 1] for k, v in observation.items() if isinstance(v, torch.Tensor | list)}
            single = policy.predict_action_chunk(alone, inference_delay=10, prev_chunk_left_over=previous[row])
            torch.testing.assert_close(single[0], both[row])
            width = policy.last_decode.tokens.shape[1]
            assert (policy.last_decode.tokens[0] == tokens[row, :width]).all()
    finally:
        policy.config.use_kv_cache = True


@pytest.mark.parametrize(
    ("delay", "steps", "horizon", "forced"),
    [
        (0, CHUNK, CHUNK, 0),  # nothing runs during inference
        (1, CHUNK, CHUNK, SPLIT),  # a partial sub-chunk is rounded up to a whole one
        (SPLIT, CHUNK, CHUNK, SPLIT),
        (SPLIT + 1, CHUNK, CHUNK, SPLIT),  # never the whole chunk (nothing would be decoded)
        (3, SPLIT - 2, CHUNK, 0),  # the leftover holds no whole sub-chunk
        (3, SPLIT, SPLIT - 1, 0),  # execution_horizon bounds the forced steps
    ],
)  # fmt: skip
def test_forced_steps_follow_the_delay_in_whole_subchunks(policy, delay, steps, horizon, forced) -> None:
    # LeRobot pads a short leftover with zero steps up to execution_horizon: they are not forced
    padded = torch.cat([leftover(1, steps), torch.zeros(1, CHUNK - steps, DIM)], dim=1)
    policy.config.rtc_config = RTCConfig(execution_horizon=horizon)
    try:
        assert policy._forced_prefix(1, delay, padded)[1] == forced
    finally:
        policy.config.rtc_config = RTCConfig(execution_horizon=CHUNK)


def test_without_rtc_or_leftover_nothing_is_forced(assets, policy, observation) -> None:
    assert policy._forced_prefix(2, 3, None) == (None, 0)
    plain = PI0FastPolicy(make_config(assets))
    plain.load_state_dict(policy.state_dict())
    assert plain._forced_prefix(2, 3, leftover()) == (None, 0)  # RTC kwargs without rtc_config: a plain decode
    torch.testing.assert_close(plain.predict_action_chunk(observation), policy.predict_action_chunk(observation))


# ---------------------------------------------------------------------------------------------------- refusals
def test_rtc_on_a_core_layout_checkpoint_is_refused_with_a_one_line_reason(assets, caplog) -> None:
    assert "\n" not in RTC_REFUSAL and "action_layout='split'" in RTC_REFUSAL
    with pytest.raises(ValueError) as info:
        PI0FastConfig(action_layout="core", rtc_config=RTCConfig())
    assert str(info.value) == RTC_REFUSAL
    core = PI0FastPolicy(make_config(assets, action_layout="core"))
    with caplog.at_level(logging.ERROR):
        assert not core.supports_rtc()  # lerobot-rollout asks this first; its own error has no reason
    assert RTC_REFUSAL in caplog.text
    core.config.rtc_config = RTCConfig()  # then it sets the config and calls init_rtc_processor
    with pytest.raises(ValueError) as info:
        core.init_rtc_processor()
    assert str(info.value) == RTC_REFUSAL


def test_a_split_layout_policy_declares_rtc(policy) -> None:
    assert policy.supports_rtc() and policy.rtc_processor is None


# ---------------------------------------------------------------------------------------------------- rollout
@pytest.mark.slow
def test_pi0_fast_rtc_rollout_drives_the_robot(pi0_fast_checkpoint: Path, tmp_path: Path) -> None:
    result, record = rollout(
        pi0_fast_checkpoint,
        tmp_path,
        "--inference.type=rtc",
        "--inference.rtc.execution_horizon=20",
        "--inference.queue_threshold=10",
        "--return_to_initial_position=false",
        # LeRobot drops the first ceil(latency x fps) steps of every new chunk: at a low rate a slow (busy) machine
        # still leaves steps of the 20-step chunk to execute; these override the helper's --fps and --duration
        "--fps=2",
        "--duration=10",
    )
    log = succeeded(result)
    assert "Creating inference engine: rtc" in log and "RTC inference thread started" in log
    requested, _ = robot_commands(record)
    if "held the normalised origin" not in log:  # 2 training steps may decode nothing (see test_rollout_cli)
        policy_made(requested)


# ---------------------------------------------------------------------------------------------------- the benchmark
def test_the_benchmarks_boundary_measures_see_a_jump_and_nothing_else() -> None:
    from benchmarks.pi0_fast_rtc import boundary_metrics

    steady = 0.1 * np.stack([np.arange(12.0), 2 * np.arange(12.0)], axis=-1)[None]  # constant velocity
    measures = boundary_metrics(steady, 6)
    assert np.isclose(measures["jump"][0], measures["step_inside"][0])
    assert np.allclose(measures["d2_boundary"], 0) and np.allclose(measures["d2_inside"], 0)
    jumped = steady.copy()
    jumped[0, 6:] += 1.0  # the second chunk starts one unit off in both dimensions
    measures = boundary_metrics(jumped, 6)
    assert np.isclose(measures["jump"][0], np.hypot(1.1, 1.2)) and np.isclose(
        measures["step_inside"][0], np.hypot(0.1, 0.2)
    )
    assert np.isclose(measures["d2_boundary"][0], 2.0) and np.allclose(measures["d2_inside"], 0)


def test_the_benchmarks_delayed_loop_follows_lerobots_rtc_queue() -> None:
    """Back-to-back inference with delay d: each chunk is computed from the observation when its inference starts,
    gets the unexecuted rest of the previous chunk as its leftover, and contributes its steps d .. 2d - 1."""
    from types import SimpleNamespace

    from benchmarks.pi0_fast_rtc import run_episode

    size, delay = 8, 3
    calls: list[tuple[float, int, np.ndarray | None]] = []

    class Chunker:
        config = SimpleNamespace(chunk_size=size, n_action_steps=4)

        def __call__(self, raw, delay=0, leftover=None):
            seen = float(raw["observation.state"][0, 0])  # the env's step count when inference started
            calls.append((seen, delay, None if leftover is None else leftover.numpy()[0, :, 0]))
            return np.stack([100 * len(calls) + np.arange(size), np.zeros(size)], axis=-1)[None]

        @staticmethod
        def post(normalised):
            return normalised

    class Env:
        steps, executed = 0, []

        def observation(self):
            return {"agent_pos": np.array([self.steps, 0.0], dtype=np.float32)}

        def reset(self, seed):
            return self.observation(), {"task": "reach", "is_success": False}

        def step(self, action):
            self.steps += 1
            self.executed.append(int(action[0]))
            return self.observation(), 0.0, False, self.steps >= 12, {"is_success": False}

    env = Env()
    assert run_episode(Chunker(), env, seed=0, delay=delay, mode="with") is False
    assert env.executed == [100, 101, 102, 203, 204, 205, 303, 304, 305, 403, 404, 405]
    assert [seen for seen, _, _ in calls] == [0, 0, 3, 6, 9]  # the first chunk is awaited, then back to back
    assert calls[0][2] is None and list(calls[1][2]) == list(100 + np.arange(size))  # all of the first chunk
    assert list(calls[2][2]) == list(200 + np.arange(delay, size))  # the rest of chunk 2 after its dropped steps
