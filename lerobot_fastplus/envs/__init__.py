"""Simulated environments that LeRobot's ``lerobot-eval`` can run (``--env.type=...``).

May import LeRobot, third-party simulators and ``lerobot_fastplus.data``; never the policies or the commands.
"""
