"""Config of the hardware-free SO-100 follower used by the ``lerobot-rollout`` tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from lerobot.robots import RobotConfig

TYPE_NAME = "fastplus_mock_so100"


@RobotConfig.register_subclass(TYPE_NAME)
@dataclass
class MockSO100Config(RobotConfig):
    # JSON-lines file that receives one event per connect / observation count / action / disconnect.
    record_path: str = ""
    # Cameras, as `observation.images.<name>` (the synthetic dataset's camera is `front`).
    camera_names: list[str] = field(default_factory=lambda: ["front"])
    camera_height: int = 64
    camera_width: int = 64
    # Same meaning as so100_follower's: cap on |goal - present position| per joint and per command.
    max_relative_target: float | None = None
    # Pose at connect, in the order shoulder_pan, shoulder_lift, elbow_flex, wrist_flex, wrist_roll, gripper.
    initial_position: list[float] = field(default_factory=lambda: [0.0, -35.0, 35.0, -10.0, 0.0, 30.0])

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.record_path:
            raise ValueError("--robot.record_path is required: the mock robot writes every command it receives there.")
        if len(self.initial_position) != 6:
            raise ValueError(f"initial_position needs 6 values (one per joint), got {len(self.initial_position)}.")
