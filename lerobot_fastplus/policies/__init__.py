"""Policies added by the plugin (each registers its config type when its ``configuration_*`` module is imported).

May import ``fast``, ``fast_action_step`` and ``data`` (``so101_baseline`` also ``envs``); never ``evaluation`` or
``tools``.
"""
