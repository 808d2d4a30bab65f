"""Baseline policies for ``--env.type=so101_sim``, as a LeRobot policy plugin: ``--policy.type=so101_baseline``.

``--policy.kind`` picks one: ``expert`` (the simulator package's scripted expert, acting from the state-mode
``observation.state``), ``hold`` (do nothing: no motion, gripper command unchanged), ``random`` (uniform over the
action space) or ``mean`` (a constant action, e.g. the training data's mean: ``--policy.mean_action=[...]``).
They give ``lerobot-eval`` success rates to set a trained policy against. Tests and the closed-loop study load this
folder through LeRobot's plugin discovery (a ``lerobot_policy_*`` distribution on ``PYTHONPATH``).
"""

from lerobot_policy_so101_baselines.configuration_so101_baseline import SO101BaselineConfig

__all__ = ["SO101BaselineConfig"]
