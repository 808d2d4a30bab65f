"""The learning study behind ``benchmarks/learning_study.py`` (its command line and JSON), one concern per module:

``config`` the settings; ``data`` episodes, batches, held-out frames and baselines; ``training`` the policies and
one optimizer step; ``evaluation`` scoring on held-out frames; ``stats`` numbers over seeds; ``tables`` and ``plot``
the printed / README tables and the figure; ``results`` derived numbers, the machine and ``--merge``; ``run`` the
whole study. Imported as ``study`` with ``benchmarks/`` on ``sys.path`` (as when running a script there); may import
``lerobot_fastplus`` and ``testing_support``.
"""
