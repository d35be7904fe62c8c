"""Commands that need no server, and the package import, must not pay for the Docker SDK or psycopg2.

Checked in fresh interpreters: this test process has long imported both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("docker", "psycopg2", "requests", "tenacity")


def python(code: str, cwd: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISION_")}
    return subprocess.run(
        [sys.executable, *flags, "-c", code], capture_output=True, text=True, cwd=cwd, env=env, timeout=60
    )


def loaded_after(code: str, cwd: Path) -> dict[str, bool]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"
    result = python(probe, cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_cli_help_imports_neither_docker_nor_psycopg2(tmp_path: Path) -> None:
    loaded = loaded_after(
        "import provision.cli as cli\ntry:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass", tmp_path
    )
    assert loaded == dict.fromkeys(HEAVY, False)


@pytest.mark.parametrize("command", ["up", "fresh", "status", "url"])
def test_subcommand_help_imports_neither(tmp_path: Path, command: str) -> None:
    loaded = loaded_after(
        f"import provision.cli as cli\ntry:\n    cli.main([{command!r}, '--help'])\nexcept SystemExit:\n    pass",
        tmp_path,
    )
    assert not loaded["docker"] and not loaded["psycopg2"]


def test_python_m_provision_help_per_importtime(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "provision", "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Exit codes:" in result.stdout
    modules = {
        line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")
    }
    assert "provision.cli" in modules  # the probe works
    assert "docker" not in modules
    assert "psycopg2" not in modules
    assert not any(m.startswith(("docker.", "psycopg2.")) for m in modules)
    # Database-name completion runs only when a shell asks for completions.
    assert "click.shell_completion" not in modules and "yaml" not in modules


def test_package_import_is_light_and_names_are_lazy(tmp_path: Path) -> None:
    loaded = loaded_after("import provision\nassert provision.__version__", tmp_path)
    assert loaded == dict.fromkeys(HEAVY, False)
    loaded = loaded_after("from provision import load_config, ConfigError\nload_config(None, env={})", tmp_path)
    assert not loaded["docker"] and not loaded["psycopg2"]


def test_lazy_attributes_resolve_and_unknown_ones_fail(tmp_path: Path) -> None:
    code = (
        "import provision\n"
        "from provision.errors import ConfigError\n"
        "assert provision.ConfigError is ConfigError\n"
        "assert callable(provision.fresh) and callable(provision.load_config)\n"
        "try:\n    provision.nope\nexcept AttributeError as e:\n    print('AttributeError', e)\n"
    )
    result = python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "AttributeError module 'provision' has no attribute 'nope'" in result.stdout


def test_pytest_plugin_import_is_light(tmp_path: Path) -> None:
    loaded = loaded_after("import provision.testing.plugin", tmp_path)
    assert not loaded["docker"] and not loaded["psycopg2"]


PROVISION_COMMAND = Path(sys.executable).parent / "provision"  # the installed console script


def imported_by_command(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run the real `provision` command, as a user types it, and list every module it imported
    (PYTHONPROFILEIMPORTTIME is -X importtime for a process whose command line we do not write)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISION_")}
    env["PYTHONPROFILEIMPORTTIME"] = "1"
    result = subprocess.run(
        [str(PROVISION_COMMAND), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=60
    )
    modules = {
        line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")
    }
    return result, modules


@pytest.mark.parametrize(
    ("args", "expected"),
    [(("--help",), "Exit codes:"), (("--version",), "provision, version"), (("url",), "postgresql://")],
)
def test_commands_that_need_no_server_import_no_server_library(
    tmp_path: Path, args: tuple[str, ...], expected: str
) -> None:
    """The lazy boundary: `--help`, `--version` and `url` (a fixed port: the default) answer
    without psycopg2, the Docker SDK or what they pull in."""
    result, modules = imported_by_command(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout
    assert "provision.cli" in modules  # the probe works
    heavy = {m for m in modules if m.split(".")[0] in HEAVY}
    assert not heavy, f"`provision {' '.join(args)}` imported {sorted(heavy)}"


def test_a_broken_config_is_reported_before_any_server_library_is_imported(tmp_path: Path) -> None:
    """doctor's config part: a config it cannot read ends the command without psycopg2 or docker."""
    (tmp_path / "provision.yaml").write_text("port: [not a port\n")
    result, modules = imported_by_command("doctor", cwd=tmp_path)
    assert result.returncode != 0 and "Error:" in result.stderr
    assert "provision.config" in modules  # the probe works
    assert not {m for m in modules if m.split(".")[0] in HEAVY}
