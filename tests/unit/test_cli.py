"""The command line, with provision.api faked where a verb would need Docker or a server.

In-process tests use click's CliRunner (parsing and output) or call provision.cli.main (exit codes);
subprocess tests run `python -m provision` exactly as a user would, with no Docker engine reachable.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from provision import api
from provision import cli as cli_module
from provision.builds.pipeline import DatabaseResult
from provision.config import Config
from provision.errors import (
    AuthFailed,
    ConfigError,
    ContainerError,
    DockerUnavailable,
    DriftDetected,
    ImageUnavailable,
    LockBusy,
    NotReady,
    PortInUse,
    ProvisionError,
    Refused,
    ServerError,
    SqlError,
    VerifyFailed,
    exit_codes,
)

Run = Callable[..., subprocess.CompletedProcess[str]]
SUBCOMMANDS = ("up", "wait", "status", "down", "logs", "psql", "url", "fresh")


@pytest.fixture(autouse=True)
def _in_empty_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ./provision.yaml unless a test writes one: the built-in defaults apply."""
    monkeypatch.chdir(tmp_path)


def up_result(action: str = "created") -> api.UpResult:
    return api.UpResult(action, "chatbi-postgres", "127.0.0.1", 5432, 170002, 1.25, 0.75)  # type: ignore[arg-type]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Fake every api verb the CLI calls; record (config, kwargs) per verb."""
    seen: dict[str, Any] = {}

    def up(cfg: Config, **kwargs: Any) -> api.UpResult:
        seen["up"] = (cfg, kwargs)
        return up_result()

    def wait(cfg: Config, **kwargs: Any) -> api.UpResult:
        seen["wait"] = (cfg, kwargs)
        return up_result("reused")

    def down(cfg: Config, **kwargs: Any) -> api.DownResult:
        seen["down"] = (cfg, kwargs)
        return api.DownResult(True, bool(kwargs.get("volumes")), cfg.volume)

    def logs(cfg: Config, **kwargs: Any) -> Iterator[bytes]:
        seen["logs"] = (cfg, kwargs)
        return iter([b"line one\n", b"line two\n"])

    def fresh(cfg: Config, **kwargs: Any) -> api.FreshResult:
        seen["fresh"] = (cfg, kwargs)
        results = (DatabaseResult("chatbi", "built", 2.0, "ab" * 32, 15, "0001_initial_schema", True),)
        return api.FreshResult(results, 2.5, "sync", up_result())

    def status(cfg: Config) -> api.StatusResult:
        seen["status"] = (cfg, {})
        databases = (
            api.DatabaseStatus("chatbi", True, 8_000_000, 15, ["0001_initial_schema"], "ab", "2024-01-01", stale=False),
            api.DatabaseStatus("chatbi_demo", False),
        )
        return api.StatusResult(
            "docker", cfg.container, "running", cfg.image, "127.0.0.1", 5432, cfg.volume, "17.2", True, None, databases
        )

    for name, fake in {"up": up, "wait": wait, "down": down, "logs": logs, "fresh": fresh, "status": status}.items():
        monkeypatch.setattr(api, name, fake)
    return seen


def invoke(*args: str, **kwargs: Any) -> Any:
    return CliRunner().invoke(cli_module.cli, list(args), standalone_mode=False, **kwargs)


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        cli_module.main(list(args))
        raise SystemExit(0)  # main() returns normally on success
    out, err = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 0 if code is None else 1), out, err


# ---------------------------------------------------------------- help


def test_help_documents_exit_codes_and_commands() -> None:
    result = invoke("--help")
    assert result.exception is None, result.output
    assert "Exit codes:" in result.output
    codes = exit_codes()
    assert {code for code, _ in codes} == {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 130}
    for code, meaning in codes:
        assert f"{code:<3} {meaning.replace('`', '')}" in result.output
    for command in SUBCOMMANDS:
        assert command in result.output
    assert "_housekeep" not in result.output
    assert "Example" in result.output


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_help_has_an_example(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exception is None, result.output
    assert "Example:" in result.output
    assert f"provision {command}" in result.output


# ---------------------------------------------------------------- parsing and output


def test_global_flags_override_the_config(calls: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "provision.yaml").write_text("port: 6000\nuser: yamluser\nimage: img:yaml\n")
    result = invoke("--port", "6543", "--image", "img:flag", "--container", "box", "up", "--timeout", "7", "-q")
    assert result.exception is None, result.output
    cfg, kwargs = calls["up"]
    assert (cfg.port, cfg.image, cfg.user, cfg.container, cfg.volume) == (
        6543,
        "img:flag",
        "yamluser",
        "box",
        "box-pgdata",
    )
    assert cfg.timeout == 7.0
    assert kwargs["recreate"] is False
    assert result.output == ""  # -q


def test_explicit_config_path(calls: dict[str, Any], tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "app.yaml").write_text("container: from-file\n")
    result = invoke("-c", "conf/app.yaml", "up", "--recreate")
    assert result.exception is None, result.output
    cfg, kwargs = calls["up"]
    assert cfg.container == "from-file" and cfg.source == str(conf / "app.yaml")
    assert kwargs["recreate"] is True
    assert "created chatbi-postgres: ready on 127.0.0.1:5432" in result.output


def test_fresh_passes_its_flags_on(calls: dict[str, Any]) -> None:
    result = invoke(
        "fresh", "--yes", "--only", "chatbi", "--only", "chatbi_demo", "--skip-demo", "--demo-scale", "3",
        "--no-cache", "--no-wait", "--recreate", "--allow-remote", "--sync-cleanup", "--timeout", "9",
    )  # fmt: skip
    assert result.exception is None, result.output
    cfg, kwargs = calls["fresh"]
    assert cfg.demo_scale == 3 and cfg.timeout == 9.0 and cfg.allow_remote is True and cfg.cleanup == "sync"
    assert kwargs["yes"] is True
    assert kwargs["only"] == ("chatbi", "chatbi_demo")
    assert kwargs["skip_demo"] is True
    assert kwargs["use_cache"] is False
    assert kwargs["wait_for_lock"] is False
    assert kwargs["recreate"] is True
    assert "chatbi: built, 15 tables, alembic 0001_initial_schema" in result.output
    assert "done in 2.50s" in result.output


def test_fresh_defaults(calls: dict[str, Any]) -> None:
    result = invoke("fresh")
    assert result.exception is None, result.output
    cfg, kwargs = calls["fresh"]
    assert kwargs["yes"] is False and kwargs["use_cache"] is None and kwargs["wait_for_lock"] is True
    assert cfg.cleanup == "background" and cfg.demo_scale == 1 and cfg.allow_remote is False


def test_fresh_asks_and_refuses_without_a_terminal(calls: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    def fresh(cfg: Config, **kwargs: Any) -> api.FreshResult:
        kwargs["confirm"]({"chatbi": 15, "chatbi_demo": 5})
        raise AssertionError("confirm must refuse without a terminal")

    monkeypatch.setattr(api, "fresh", fresh)
    result = invoke("fresh")
    assert isinstance(result.exception, Refused)
    assert "chatbi (15 tables), chatbi_demo (5 tables)" in str(result.exception)
    assert "--yes" in result.exception.hint


def test_status_text(calls: dict[str, Any]) -> None:
    result = invoke("status")
    assert result.exception is None, result.output
    assert "container  chatbi-postgres  running  postgres:17  127.0.0.1:5432  volume chatbi-pgdata" in result.output
    assert "PostgreSQL 17.2" in result.output
    assert "up to date" in result.output
    assert "chatbi_demo    missing" in result.output


def test_wait_and_logs(calls: dict[str, Any]) -> None:
    result = invoke("wait", "--timeout", "3")
    assert result.exception is None, result.output
    assert calls["wait"][0].timeout == 3.0
    assert "ready on 127.0.0.1:5432" in result.output
    result = invoke("logs", "--tail", "5")
    assert result.exception is None, result.output
    assert result.output == "line one\nline two\n"
    assert calls["logs"][1] == {"follow": False, "tail": 5}


def test_down_without_volumes_does_not_ask(calls: dict[str, Any]) -> None:
    result = invoke("down")
    assert result.exception is None, result.output
    assert calls["down"][1] == {"volumes": False}
    assert result.output == "container chatbi-postgres: removed\n"


def test_down_volumes_without_yes_and_no_terminal_is_refused(calls: dict[str, Any]) -> None:
    result = invoke("down", "--volumes")
    assert isinstance(result.exception, Refused)
    assert result.exception.exit_code == 9
    assert "chatbi-pgdata" in str(result.exception)
    assert "down" not in calls  # nothing was touched


def test_down_volumes_with_yes(calls: dict[str, Any]) -> None:
    result = invoke("down", "--volumes", "--yes")
    assert result.exception is None, result.output
    assert calls["down"][1] == {"volumes": True}
    assert "volume chatbi-pgdata: removed" in result.output


def test_url_masks_the_password_by_default() -> None:
    result = invoke("url", env={"PROVISION_PASSWORD": "p@ss w'rd\"$\\é"})
    assert result.exception is None, result.output
    assert result.output.strip() == "postgresql://chatbi:***@127.0.0.1:5432/chatbi"


def test_url_shows_an_encoded_password_when_asked() -> None:
    password = "p@ss w'rd\"$\\é"
    result = invoke("--target", "server", "--port", "6543", "url", "chatbi_demo", "--show-password",
                    env={"PROVISION_PASSWORD": password})  # fmt: skip
    assert result.exception is None, result.output
    parsed = urllib.parse.urlsplit(result.output.strip())
    assert urllib.parse.unquote(parsed.password or "") == password
    assert (parsed.port, parsed.path) == (6543, "/chatbi_demo")


def test_url_for_an_unknown_database() -> None:
    result = invoke("url", "chatbi_dmeo")
    assert isinstance(result.exception, ConfigError)
    assert "did you mean 'chatbi_demo'" in result.exception.hint


def test_bad_flag_value_is_a_usage_error() -> None:
    result = invoke("--port", "abc", "url")
    assert isinstance(result.exception, click.BadParameter)


@pytest.mark.parametrize(
    "args", [("--port", "abc", "url"), ("fresh", "--no-such-flag"), ("snapshot", "nope"), ("--target", "cloud", "up")]
)
def test_a_bad_flag_exits_2_and_names_it(run_provision: Any, args: tuple[str, ...]) -> None:
    """Through the real command: usage errors are exit 2 (nothing touched), never a traceback."""
    result = run_provision(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert any(word in result.stderr for word in ("abc", "--no-such-flag", "nope", "cloud")), result.stderr


# ---------------------------------------------------------------- exit codes through main()

ERRORS: list[tuple[type[ProvisionError], int]] = [
    (ConfigError, 2),
    (DockerUnavailable, 3),
    (ContainerError, 4),
    (PortInUse, 4),
    (ImageUnavailable, 4),
    (DriftDetected, 4),
    (NotReady, 5),
    (AuthFailed, 6),
    (SqlError, 7),
    (VerifyFailed, 7),
    (LockBusy, 8),
    (Refused, 9),
    (ServerError, 10),
]


@pytest.mark.parametrize(("error_type", "code"), ERRORS, ids=[e.__name__ for e, _ in ERRORS])
def test_provision_errors_map_to_their_exit_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], error_type: type[ProvisionError], code: int
) -> None:
    def up(cfg: Config, **kwargs: Any) -> api.UpResult:
        raise error_type("it went wrong", hint="do this instead", detail="detail line 1\ndetail line 2")

    monkeypatch.setattr(api, "up", up)
    exit_code, out, err = run_main(capsys, "up")
    assert exit_code == code == error_type.exit_code
    assert err.splitlines() == ["Error: it went wrong", "detail line 1", "detail line 2", "Hint: do this instead"]
    assert "Traceback" not in err
    assert out == ""


def test_default_hints_are_shown(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def up(cfg: Config, **kwargs: Any) -> api.UpResult:
        raise DockerUnavailable("cannot reach the Docker engine at unix:///x.sock")

    monkeypatch.setattr(api, "up", up)
    exit_code, _, err = run_main(capsys, "up")
    assert exit_code == 3
    assert "Hint: start the Docker engine" in err


def test_unexpected_errors_exit_1_with_a_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def up(cfg: Config, **kwargs: Any) -> api.UpResult:
        raise RuntimeError("surprise")

    monkeypatch.setattr(api, "up", up)
    exit_code, _, err = run_main(capsys, "up")
    assert exit_code == 1
    assert "Error: unexpected RuntimeError: surprise" in err
    assert "--debug" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("args", [("--debug", "up"), ("up",)])
def test_debug_shows_the_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    if args == ("up",):
        monkeypatch.setenv("PROVISION_DEBUG", "1")

    def up(cfg: Config, **kwargs: Any) -> api.UpResult:
        raise LockBusy("busy")

    monkeypatch.setattr(api, "up", up)
    exit_code, _, err = run_main(capsys, *args)
    assert exit_code == 8
    assert "Traceback (most recent call last)" in err
    assert "Error: busy" in err


@pytest.mark.parametrize(("exc", "code"), [(KeyboardInterrupt(), 130), (click.exceptions.Abort(), 130)])
def test_interrupts_exit_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], exc: BaseException, code: int
) -> None:
    def up(cfg: Config, **kwargs: Any) -> api.UpResult:
        raise exc

    monkeypatch.setattr(api, "up", up)
    exit_code, _, err = run_main(capsys, "up")
    assert exit_code == code
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "args", [("--port", "abc", "url"), ("no-such-command",), ("fresh", "--demo-scale", "x"), ("up", "--bogus")]
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], args: tuple[str, ...]) -> None:
    exit_code, _, err = run_main(capsys, *args)
    assert exit_code == 2
    assert "Error" in err
    assert "Traceback" not in err


def test_success_returns_normally(calls: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(capsys, "up", "-q")[0] == 0
    assert run_main(capsys, "--help")[0] == 0


def test_config_errors_exit_2_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "provision.yaml").write_text("prot: 5433\n")
    exit_code, _, err = run_main(capsys, "url")
    assert exit_code == 2
    assert "Error: unknown key 'prot'" in err and "did you mean 'port'" in err
    assert "Hint: valid keys:" in err


# ---------------------------------------------------------------- as a user runs it (subprocess, no Docker)


def test_program_help_exits_0(run_provision: Run) -> None:
    result = run_provision("--help")
    assert result.returncode == 0, result.stderr
    assert "Exit codes:" in result.stdout and "130 interrupted" in result.stdout


def test_bad_config_file_exits_2_with_error_and_hint(run_provision: Run, tmp_path: Path) -> None:
    (tmp_path / "provision.yaml").write_text("port: 5432\n  image: broken\n")
    result = run_provision("up")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("Error: invalid YAML in ")
    assert "line 2" in result.stderr
    assert "\nHint: " in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_missing_config_file_exits_2(run_provision: Run, tmp_path: Path) -> None:
    result = run_provision("-c", "nope.yaml", "status")
    assert result.returncode == 2
    assert f"config file not found: {tmp_path / 'nope.yaml'}" in result.stderr
    assert "Hint:" in result.stderr and "Traceback" not in result.stderr


def test_debug_flag_shows_a_traceback(run_provision: Run, tmp_path: Path) -> None:
    (tmp_path / "provision.yaml").write_text("prot: 1\n")
    result = run_provision("--debug", "up")
    assert result.returncode == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert "Error: unknown key 'prot'" in result.stderr


def test_unreachable_docker_exits_3_naming_the_socket(run_provision: Run) -> None:
    result = run_provision("up", "--timeout", "5")
    assert result.returncode == 3, result.stderr
    assert os.environ["DOCKER_HOST"] in result.stderr
    assert "Hint: start the Docker engine" in result.stderr
    assert "Traceback" not in result.stderr


def test_down_volumes_without_yes_and_no_tty_exits_9(run_provision: Run) -> None:
    result = run_provision("down", "--volumes")
    assert result.returncode == 9, result.stderr
    assert "chatbi-pgdata" in result.stderr
    assert "Hint: pass --yes" in result.stderr


def test_url_for_a_server_target_needs_no_docker(run_provision: Run) -> None:
    result = run_provision("--target", "server", "url", env={"PROVISION_PASSWORD": "Sup3r-Secret"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "postgresql://chatbi:***@127.0.0.1:5432/chatbi\n"
    assert "Sup3r-Secret" not in result.stdout + result.stderr


@pytest.fixture
def sqlclient(tmp_path: Path) -> Path:
    """A small project with its own config and numbered migrations."""
    project = tmp_path / "sqlclient"
    (project / "migrations").mkdir(parents=True)
    for name in ("10_queries.sql", "2_sessions.sql", "1_users.sql"):
        (project / "migrations" / name).write_text(f"-- {name}\ncreate table t_{name[:-4]} (id int);\n")
    (project / "provision.yaml").write_text(
        "container: sqlclient-postgres\n"
        "port: 5544\n"
        "databases:\n"
        "  sqlclient:\n"
        "    sql: migrations\n"
        "    tables: [t_1_users]\n"
    )
    return project


def snapshot(directory: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in directory.rglob("*")}


def test_fresh_dry_run_lists_sources_and_touches_nothing(run_provision: Run, sqlclient: Path, tmp_path: Path) -> None:
    before = snapshot(tmp_path)
    result = run_provision("-c", str(sqlclient / "provision.yaml"), "fresh", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert snapshot(tmp_path) == before
    lines = result.stdout.splitlines()
    assert lines[0] == "dry run: nothing will be touched (docker target, container sqlclient-postgres)"
    assert "sqlclient:" in lines
    source_lines = [line.strip() for line in lines if "sha256" in line]
    expected = []
    for name in ("1_users.sql", "2_sessions.sql", "10_queries.sql"):
        data = (sqlclient / "migrations" / name).read_bytes()
        expected.append(f"migrations/{name}  {len(data)} bytes  sha256 {hashlib.sha256(data).hexdigest()}")
    assert source_lines == expected
    assert any("ON_ERROR_STOP=1 --single-transaction" in line for line in lines)
    assert any("verify 1 expected table(s)" in line for line in lines)


def test_fresh_dry_run_json_of_the_builtin_databases(run_provision: Run) -> None:
    result = run_provision("fresh", "--dry-run", "--json", "--demo-scale", "2")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["target"] == "docker" and plan["container"] == "chatbi-postgres"
    chatbi, demo = plan["databases"]
    assert chatbi["alembic_revision"] == "0001_initial_schema"
    assert any("stamp alembic_version = 0001_initial_schema" in step for step in chatbi["steps"])
    assert [s["path"] for s in chatbi["sources"]] == ["init_app_tables.sql"]
    assert all(len(s["sha256"]) == 64 and s["size"] > 0 for s in chatbi["sources"] + demo["sources"])
    assert demo["variables"] == {"scale": "2"}


def test_fresh_dry_run_with_a_bad_source_exits_2(run_provision: Run, sqlclient: Path) -> None:
    (sqlclient / "migrations" / "3_empty.sql").write_text("")
    result = run_provision("-c", str(sqlclient / "provision.yaml"), "fresh", "--dry-run")
    assert result.returncode == 2
    assert "SQL file is empty" in result.stderr and "3_empty.sql" in result.stderr


def test_readme_documents_every_exit_code_and_target_kind() -> None:
    """The README's tables come from the one definition of each: errors.exit_codes() and targets.KINDS."""
    from provision.targets import KINDS

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for code, meaning in exit_codes():
        assert f"| {code} | {meaning} |" in readme
    for name, kind in KINDS.items():
        assert f"| `{name}` | {kind.summary} |" in readme
    assert "--target " + "|".join(KINDS) in readme


def complete(words: str, cwd: Path, env: dict[str, str] | None = None) -> list[str]:
    """What the shell gets for `words` (bash's protocol: one `type,value` line per item)."""
    parts = words.split(" ")
    result = subprocess.run(
        [sys.executable, "-m", "provision"],
        env={**os.environ, **(env or {}), "_PROVISION_COMPLETE": "bash_complete", "COMP_WORDS": words,
             "COMP_CWORD": str(len(parts) - 1)},
        capture_output=True, text=True, cwd=cwd, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [line.split(",", 1)[1] for line in result.stdout.splitlines() if line]


def test_database_names_complete_from_the_config(tmp_path: Path, sqlclient: Path) -> None:
    assert complete("provision url chatbi_", tmp_path) == ["chatbi_demo"]
    assert complete("provision fresh --only ", tmp_path) == ["chatbi", "chatbi_demo"]
    assert complete("provision psql ", tmp_path) == ["chatbi", "chatbi_demo"]
    assert complete("provision snapshot save x --db chatbi", tmp_path) == ["chatbi", "chatbi_demo"]
    assert complete(f"provision -c {sqlclient / 'provision.yaml'} psql ", tmp_path) == ["sqlclient"]
    (tmp_path / "provision.yaml").write_text("databases: [broken\n")
    assert complete("provision url ", tmp_path) == []  # a broken config completes nothing, quietly


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_for_each_shell(tmp_path: Path, shell: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "provision"], env={**os.environ, "_PROVISION_COMPLETE": f"{shell}_source"},
        capture_output=True, text=True, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert result.returncode == 0 and "_PROVISION_COMPLETE" in result.stdout, result.stderr


def test_one_version_everywhere() -> None:
    """provision --version, the installed package's metadata and the changelog's newest release agree."""
    import importlib.metadata
    import re

    import provision

    changelog = (Path(__file__).resolve().parents[2] / "CHANGELOG.md").read_text()
    released = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", changelog, flags=re.MULTILINE)
    assert released and released[0] == provision.__version__
    assert importlib.metadata.version("provision") == provision.__version__
    assert invoke("--version").output.strip() == f"provision, version {provision.__version__}"
