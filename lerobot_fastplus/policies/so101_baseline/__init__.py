"""so101_baseline: what a trained policy on ``--env.type=so101_sim`` is measured against, as a LeRobot policy type.

``lerobot-eval --policy.type=so101_baseline --policy.kind=<kind> --env.type=so101_sim`` runs one of: ``expert``
(the simulator package's scripted expert, acting from the state-mode ``observation.state``), ``hold`` (do nothing:
no motion, gripper command unchanged), ``random`` (uniform over the action space) or ``mean`` (one constant action,
e.g. the training data's mean: ``--policy.mean_action=[...]``). Nothing is trained; importing the configuration
registers the type.
"""
