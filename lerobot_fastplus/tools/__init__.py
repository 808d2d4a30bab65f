"""Console scripts only (``[project.scripts]`` in pyproject.toml), one module each, plus ``cli``, what they share.

``train_tokenizer`` / ``check_tokenizer`` / ``compare_transforms`` fit and measure FAST tokenizers, ``evaluate_offline``
scores a checkpoint, ``libero_setup`` makes LeRobot's LIBERO env work offline, ``record_so101`` records scripted
SO-101 demonstrations in MuJoCo, ``demo`` runs the whole pipeline. Library code lives in ``data``, ``envs``,
``evaluation`` and ``fast``: commands may import any part of the package, nothing in
the package imports a command (``demo`` runs ``train_tokenizer``'s ``train``, the one command calling another).
A command module imports LeRobot, torch, transformers and the package modules that import them only inside the
functions that run it, so that its config parses and ``--help`` prints at once (``tests/test_console_help.py``).
"""
