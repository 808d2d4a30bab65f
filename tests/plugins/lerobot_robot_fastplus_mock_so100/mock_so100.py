"""A hardware-free SO-100 follower: the same observation and action features as LeRobot's ``so100_follower``
(six ``<joint>.pos`` values, RGB cameras), and the same command path: ``max_relative_target`` capping through
LeRobot's own ``ensure_safe_goal_position``, then the motor bus's clamp to the normalised range (-100..100 for the
arm joints, 0..100 for the gripper, as with ``use_degrees=false``). The present position follows the last goal
exactly. Every event is appended, with its time, to ``record_path`` (JSON lines) so a test can check what the
rollout sent.
"""

from __future__ import annotations

import json
import math
import time
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from lerobot.robots import Robot
from lerobot.robots.utils import ensure_safe_goal_position
from lerobot.utils.errors import DeviceAlreadyConnectedError, DeviceNotConnectedError

from .config_mock_so100 import TYPE_NAME, MockSO100Config

JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
# The bus clamps normalised goals to these ranges before writing them to the motors.
LIMITS = {joint: (0.0, 100.0) if joint == "gripper" else (-100.0, 100.0) for joint in JOINTS}


class MockSO100(Robot):
    config_class = MockSO100Config
    name = TYPE_NAME

    def __init__(self, config: MockSO100Config) -> None:
        super().__init__(config)
        self.config = config
        self.cameras = {name: (config.camera_height, config.camera_width, 3) for name in config.camera_names}
        self._present = dict(zip(JOINTS, map(float, config.initial_position), strict=True))
        self._connected = False
        self._observations = 0
        self._record = Path(config.record_path)

    @cached_property
    def observation_features(self) -> dict[str, type | tuple]:
        return {**{f"{joint}.pos": float for joint in JOINTS}, **self.cameras}

    @cached_property
    def action_features(self) -> dict[str, type]:
        return {f"{joint}.pos": float for joint in JOINTS}

    @property
    def is_connected(self) -> bool:
        return self._connected

    @property
    def is_calibrated(self) -> bool:
        return True

    def connect(self, calibrate: bool = True) -> None:
        if self._connected:
            raise DeviceAlreadyConnectedError(f"{self} is already connected.")
        self._connected = True
        self._write({"event": "connect", "position": self._present})

    def calibrate(self) -> None:
        """Nothing to calibrate: positions are already normalised."""

    def configure(self) -> None:
        """No motor registers to write."""

    def get_observation(self) -> dict[str, Any]:
        if not self._connected:
            raise DeviceNotConnectedError(f"{self} is not connected.")
        self._observations += 1
        obs: dict[str, Any] = {f"{joint}.pos": value for joint, value in self._present.items()}
        for index, (name, shape) in enumerate(self.cameras.items()):
            obs[name] = self._render(shape, index)
        return obs

    def send_action(self, action: dict[str, Any]) -> dict[str, float]:
        if not self._connected:
            raise DeviceNotConnectedError(f"{self} is not connected.")
        requested = {key.removesuffix(".pos"): float(value) for key, value in action.items() if key.endswith(".pos")}
        goal = dict(requested)
        if self.config.max_relative_target is not None:
            pairs = {joint: (value, self._present[joint]) for joint, value in goal.items()}
            goal = ensure_safe_goal_position(pairs, self.config.max_relative_target)
        sent = {}
        for joint, value in goal.items():
            low, high = LIMITS[joint]
            sent[joint] = min(high, max(low, value)) if math.isfinite(value) else self._present[joint]
        self._write({"event": "action", "keys": sorted(action), "requested": requested, "sent": sent})
        self._present.update(sent)
        return {f"{joint}.pos": value for joint, value in sent.items()}

    def disconnect(self) -> None:
        if not self._connected:
            raise DeviceNotConnectedError(f"{self} is not connected.")
        self._connected = False
        self._write({"event": "disconnect", "observations": self._observations})

    def __del__(self) -> None:
        """No disconnect-on-garbage-collection safety net: the record must show the rollout's own disconnect."""

    def _render(self, shape: tuple[int, int, int], index: int) -> np.ndarray:
        """A frame that changes with the pose (a bright column at the shoulder_pan angle)."""
        height, width, _ = shape
        frame = np.full(shape, 40 + 60 * index, dtype=np.uint8)
        column = int((self._present["shoulder_pan"] + 100.0) / 200.0 * (width - 1))
        frame[:, max(0, min(width - 1, column))] = (220, 180, 90)
        frame[: height // 8] = int(self._present["gripper"] * 2.55)
        return frame

    def _write(self, event: dict[str, Any]) -> None:
        # Non-finite floats are written as NaN / Infinity tokens (json's default), which json.loads reads back.
        with self._record.open("a") as f:
            f.write(json.dumps({**event, "time": time.monotonic()}) + "\n")
