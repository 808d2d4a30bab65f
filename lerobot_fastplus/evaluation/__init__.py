"""Measurements the commands report: a FAST tokenizer on action chunks (``tokenizer_report``), a checkpoint on
held-out episodes (``offline``; its flags, importing nothing heavy, in ``offline_config``), closed-loop success rates
from ``lerobot-eval`` with their intervals and the verdict against blind baselines (``closed_loop``), and
``lerobot-train``'s logged curves (``training_log``).

Layer: above ``data`` and ``fast``, below the commands. Checkpoints are loaded through LeRobot's factories, so this
never imports ``policies`` (nor ``tools``).
"""
