"""Policies added by the plugin (each registers its config type when its ``configuration_*`` module is imported)."""
