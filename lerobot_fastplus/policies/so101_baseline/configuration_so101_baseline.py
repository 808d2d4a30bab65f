"""Config of the so101_sim baseline policies (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass

from lerobot.configs import FeatureType, NormalizationMode, PolicyFeature, PreTrainedConfig
from lerobot.optim import AdamConfig

KINDS = ("expert", "hold", "random", "mean")


@PreTrainedConfig.register_subclass("so101_baseline")
@dataclass
class SO101BaselineConfig(PreTrainedConfig):
    # Which baseline: expert (the scripted expert), hold (do nothing), random (uniform actions) or mean (one constant
    # action, --policy.mean_action).
    kind: str = "expert"
    # so101_sim task the expert solves: reach_close | pick_place
    task: str = "reach_close"
    # Metres per unit of position action (the env's --env.action_scale).
    action_scale: float = 0.025
    # The constant action of kind=mean (4 values: dx, dy, dz, gripper).
    mean_action: list[float] | None = None
    # Seed of the random actions (kind=random).
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kind not in KINDS:
            raise ValueError(f"--policy.kind={self.kind!r}; use one of {', '.join(KINDS)}")
        if self.kind == "mean" and (self.mean_action is None or len(self.mean_action) != 4):
            raise ValueError("--policy.kind=mean needs --policy.mean_action=[dx,dy,dz,gripper]")
        self.normalization_mapping = {"STATE": NormalizationMode.IDENTITY, "ACTION": NormalizationMode.IDENTITY}

    def validate_features(self) -> None:
        if "action" not in self.output_features:
            self.output_features["action"] = PolicyFeature(type=FeatureType.ACTION, shape=(4,))

    def get_optimizer_preset(self) -> AdamConfig:
        return AdamConfig(lr=0.0)

    def get_scheduler_preset(self) -> None:
        return None

    @property
    def observation_delta_indices(self) -> None:
        return None

    @property
    def action_delta_indices(self) -> None:
        return None

    @property
    def reward_delta_indices(self) -> None:
        return None
