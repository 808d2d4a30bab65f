"""The SO-101 closed-loop study (``benchmarks/so101_closed_loop.py``): one concern per module.

``commands`` builds the recorder / tokenizer / ``lerobot-train`` / ``lerobot-eval`` command lines, ``runs`` runs
them and reads their logs and ``eval_info.json``, ``stats`` holds the success-rate statistics (Wilson intervals,
spread over seeds), ``report`` writes the JSON, the plot and the markdown table. Everything the study measures goes
through LeRobot's own commands and the package's ``--env.type=so101_sim``; may import ``lerobot_fastplus``,
``testing_support`` and ``benchmarks.study``.
"""
