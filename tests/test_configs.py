"""The ready configurations ship in the package: the CLI prints them, load_config() reads them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import ctxlog
from ctxlog import ContextError

ROOT = Path(__file__).resolve().parent.parent


def test_the_top_level_config_folder_holds_what_the_package_ships() -> None:
    shipped = ROOT / "ctxlog" / "config"
    names = sorted(p.name for p in (ROOT / "config").iterdir())
    assert names == sorted(p.name for p in shipped.iterdir())
    for name in names:
        assert (ROOT / "config" / name).read_bytes() == (shipped / name).read_bytes(), name


def test_the_cli_prints_one_and_lists_them(tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ctxlog", "config", *args],
            capture_output=True,
            text=True,
            check=False,
            cwd=tmp_path,  # outside the checkout: the package's own files
        )

    printed = cli("logging-json.json")
    assert printed.returncode == 0
    assert printed.stdout == (ROOT / "config" / "logging-json.json").read_text(encoding="utf-8")
    listed = cli("--list")
    assert listed.stdout.split() == sorted(p.name for p in (ROOT / "config").iterdir())
    missing = cli("logging.ini")
    assert missing.returncode == 2
    assert "choose one of: logging-json.json" in missing.stderr


@pytest.mark.parametrize("name", ["logging-json.json", "logging-json.yaml", "structlog-json.yaml"])
def test_load_config(name: str) -> None:
    config = ctxlog.load_config(name)
    assert config["version"] == 1
    assert config == json.loads(json.dumps(config))  # plain data, as dictConfig takes it


def test_load_config_of_an_unknown_name() -> None:
    with pytest.raises(ContextError, match=r"No ready configuration 'x\.json'"):
        ctxlog.load_config("x.json")
