"""``fastplus-libero-setup``: LIBERO's config and assets offline, verified, idempotent, never overwriting silently.

Every test runs with its own HOME, so the assets link goes to ``<tmp>/home/.cache/libero/assets`` and the installed
asset packages are only read (altered files are real copies inside a tree of links, see ``libero_helpers``).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from libero_helpers import LiberoInstall, alter_file, asset_tree_of_links, require_libero, run_setup

from lerobot_fastplus.data.libero_assets import (
    assets_locations,
    git_blob_sha1,
    libero_package_dir,
    packaged_assets_dir,
    read_manifest,
    verify_assets,
)
from lerobot_fastplus.tools.libero_setup import main


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LiberoInstall:
    require_libero()
    install = LiberoInstall(tmp_path)
    install.home.mkdir()
    for key, value in install.environ().items():
        monkeypatch.setenv(key, value)
    return install


def snapshot(install: LiberoInstall) -> dict[str, object]:
    """What a setup leaves behind: the config file's bytes and where the assets link points."""
    return {
        "config": (install.config_dir / "config.yaml").read_bytes(),
        "assets_link": os.readlink(install.assets_dir),
        "files": sorted(str(path.relative_to(install.root)) for path in install.root.rglob("*")),
    }


def test_git_blob_sha1_is_what_git_hash_object_gives(tmp_path: Path) -> None:
    path = tmp_path / "mesh.obj"
    path.write_bytes(b"v 0 0 0\nv 1 0 0\n\x00\xff binary tail")
    expected = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True, check=True).stdout
    assert git_blob_sha1(path) == expected.strip()


def test_the_packaged_manifest_lists_libero_assets_tree() -> None:
    manifest = read_manifest()
    assert len(manifest) == 585
    assert {path.split("/")[0] for path in manifest} >= {
        "articulated_objects",
        "scenes",
        "stable_hope_objects",
        "stable_scanned_objects",
        "turbosquid_objects",
    }
    assert manifest["articulated_objects/basin_faucet.xml"] == "b013a18cbb3f74d25ce7bddc8c8fead049e617f2"


def test_the_installed_asset_packages_match_the_manifest() -> None:
    require_libero()
    check = verify_assets(packaged_assets_dir(), read_manifest())
    assert check.ok, check.describe()


def test_setup_twice_gives_the_same_result(install: LiberoInstall, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(install.setup_args()) == 0
    first_output = capsys.readouterr().out
    first = snapshot(install)
    assert "assets: linked" in first_output and "config: wrote" in first_output
    config = yaml.safe_load(first["config"])
    assert config["bddl_files"] == str(libero_package_dir() / "bddl_files")
    assert config["assets"] == str(install.assets_dir)
    assert Path(first["assets_link"]) == packaged_assets_dir()

    assert main(install.setup_args()) == 0
    second_output = capsys.readouterr().out
    assert snapshot(install) == first
    assert "unchanged" in second_output.split("\n")[0] and "config:" in second_output
    assert "linked" not in second_output and "wrote" not in second_output
    # a fresh process (no terminal) imports hf-libero from this config and finds the assets without downloading
    # (in <site-packages>/libero/libero/assets instead where a default setup made that folder: hf-libero looks first)
    package = assets_locations()["package"]
    used = package if package.exists() else install.assets_dir
    assert f"hf-libero imports without a prompt and uses {used}" in second_output


def test_the_console_script_sets_up_a_fresh_home(install: LiberoInstall) -> None:
    run_setup(install)
    assert verify_assets(install.assets_dir, read_manifest()).ok
    assert (install.config_dir / "config.yaml").is_file()


def test_an_altered_asset_file_is_named_and_nothing_is_installed(
    install: LiberoInstall, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = asset_tree_of_links(tmp_path / "source", packaged_assets_dir())
    altered, removed = "scenes/libero_tabletop_base_style.xml", "stable_scanned_objects/basket/basket.obj"
    assert {altered, removed} <= set(read_manifest())
    alter_file(source / altered)
    (source / removed).unlink()

    assert main(install.setup_args(f"--source_dir={source}")) == 2
    error = capsys.readouterr().err
    assert f"1 of 585 files altered: {altered}" in error
    assert f"1 of 585 files missing: {removed}" in error
    assert not install.assets_dir.exists() and not install.config_dir.exists()


def test_an_installed_asset_file_altered_later_fails_the_next_run(
    install: LiberoInstall, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = asset_tree_of_links(tmp_path / "source", packaged_assets_dir())
    assert main(install.setup_args(f"--source_dir={source}")) == 0
    altered = "stable_hope_objects/ketchup/ketchup.xml"
    alter_file(source / altered)
    capsys.readouterr()

    assert main(install.setup_args()) == 2
    error = capsys.readouterr().err
    assert f"{install.assets_dir} exists but is not LIBERO's asset tree (1 of 585 files altered: {altered})" in error
    assert "--overwrite=true" in error
    assert Path(os.readlink(install.assets_dir)) == source  # left as it was

    assert main(install.setup_args("--overwrite=true")) == 0
    assert Path(os.readlink(install.assets_dir)) == packaged_assets_dir()
    assert verify_assets(install.assets_dir, read_manifest()).ok


def test_a_foreign_assets_folder_is_kept_unless_overwrite(
    install: LiberoInstall, capsys: pytest.CaptureFixture[str]
) -> None:
    install.assets_dir.mkdir(parents=True)
    (install.assets_dir / "mine.txt").write_text("user data")
    assert main(install.setup_args()) == 2
    assert "585 of 585 files missing" in capsys.readouterr().err
    assert (install.assets_dir / "mine.txt").read_text() == "user data"

    assert main(install.setup_args("--overwrite=true")) == 0
    assert "removed the old folder" in capsys.readouterr().out
    assert install.assets_dir.is_symlink()


def test_an_empty_assets_folder_from_a_failed_download_is_replaced(
    install: LiberoInstall, capsys: pytest.CaptureFixture[str]
) -> None:
    install.assets_dir.mkdir(parents=True)
    assert main(install.setup_args()) == 0
    output = capsys.readouterr().out
    assert f"assets: removed the empty folder {install.assets_dir}" in output and "assets: linked" in output


def test_a_users_working_config_is_kept(install: LiberoInstall, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(install.setup_args()) == 0
    config_file = install.config_dir / "config.yaml"
    users = {**yaml.safe_load(config_file.read_text()), "datasets": str(install.root / "my_datasets")}
    config_file.write_text(yaml.safe_dump(users))
    before = config_file.read_bytes()
    capsys.readouterr()

    assert main(install.setup_args()) == 0
    assert config_file.read_bytes() == before
    assert f"config: kept your {config_file} (it differs in datasets" in capsys.readouterr().out


def test_a_broken_config_is_refused_unless_overwrite(
    install: LiberoInstall, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = install.config_dir / "config.yaml"
    config_file.parent.mkdir()
    config_file.write_text("bddl_files: /nowhere\n")
    assert main(install.setup_args()) == 2
    error = capsys.readouterr().err
    assert "LIBERO cannot run from it" in error and "'init_states' is missing" in error and "--overwrite=true" in error
    assert config_file.read_text() == "bddl_files: /nowhere\n"

    assert main(install.setup_args("--overwrite=true")) == 0
    assert f"config: replacing {config_file}" in capsys.readouterr().out
    assert yaml.safe_load(config_file.read_text())["bddl_files"] == str(libero_package_dir() / "bddl_files")


def test_config_dir_defaults_to_libero_config_path(install: LiberoInstall, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--assets_location=cache"]) == 0  # LIBERO_CONFIG_PATH is install.config_dir
    assert (install.config_dir / "config.yaml").is_file()
    assert f"export LIBERO_CONFIG_PATH={install.config_dir}" in capsys.readouterr().out


def test_without_libero_config_path_the_config_goes_where_libero_looks(
    install: LiberoInstall, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("LIBERO_CONFIG_PATH")
    assert main(["--assets_location=cache"]) == 0
    assert (install.home / ".libero" / "config.yaml").is_file()
    assert "LIBERO_CONFIG_PATH" not in capsys.readouterr().out  # nothing to export


def test_an_unknown_assets_location_is_refused(install: LiberoInstall, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--assets_location=/data/libero"]) == 2
    assert "use one of ['cache', 'package']" in capsys.readouterr().err


def test_hf_libero_looks_in_the_package_folder_first() -> None:
    require_libero()
    locations = assets_locations()
    assert list(locations) == ["package", "cache"]
    assert locations["package"] == libero_package_dir() / "assets"
    assert (libero_package_dir() / "bddl_files").is_dir()
