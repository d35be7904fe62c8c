"""The launcher's own decisions: when to use a forkserver, where its socket lives, what a request carries."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from provision import launcher


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    base = tmp_path / "run"
    base.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))
    monkeypatch.delenv(launcher.SWITCH, raising=False)
    return base


@pytest.mark.parametrize("value", ["0", "false", "No", " off "])
def test_the_switch_turns_it_off(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(launcher.SWITCH, value)
    assert not launcher.enabled(["fresh"])


@pytest.mark.parametrize("value", ["", "1", "yes"])
def test_it_is_on_by_default(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(launcher.SWITCH, value)
    assert launcher.enabled(["fresh", "--yes"])


def test_interactive_psql_runs_in_the_terminals_own_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(launcher.SWITCH, raising=False)
    assert not launcher.enabled(["-c", "x.yaml", "psql", "chatbi"])


def test_the_socket_folder_is_private(runtime: Path) -> None:
    folder = launcher.socket_folder()
    assert folder == str(runtime / f"provision-{os.getuid()}")
    assert os.stat(folder).st_mode & 0o777 == 0o700


def test_a_folder_others_can_enter_is_refused(runtime: Path) -> None:
    folder = runtime / f"provision-{os.getuid()}"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    assert launcher.socket_folder() is None
    assert launcher.socket_path() is None


def test_a_symlinked_folder_is_refused(runtime: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (runtime / f"provision-{os.getuid()}").symlink_to(elsewhere)
    assert launcher.socket_folder() is None


def test_tmpdir_is_used_without_a_runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    assert launcher.socket_folder() == str(tmp_path / f"provision-{os.getuid()}")


def test_a_socket_path_too_long_for_unix_sockets_means_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(deep))
    assert launcher.socket_folder() is not None
    assert launcher.socket_path() is None


def test_the_code_key_names_interpreter_path_and_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    key = launcher.code_key()
    assert key == launcher.code_key()
    monkeypatch.setattr(sys, "path", [*sys.path, "/somewhere/else"])
    assert launcher.code_key() != key
    monkeypatch.undo()
    stamps = launcher.source_stamps()
    assert any(stamp.split(":")[0].endswith("/provision/launcher.py") for stamp in stamps)
    assert any(stamp.split(":")[0].endswith("/provision/targets/docker.py") for stamp in stamps)


def test_a_request_carries_the_command_as_given(runtime: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PROVISION_PORT", "6001")
    monkeypatch.setenv("ODD_VALUE", "a=b=c ünï")
    argv = ["-c", "conf ig.yaml", "fresh", "--yes", "caf\udce9"]  # an undecodable byte, as Python passes it
    payload = launcher.encode_request(argv)
    assert payload is not None
    request = launcher.Request(payload)
    assert request.argv == argv
    assert request.cwd == os.fsencode(str(tmp_path))
    assert request.env[b"PROVISION_PORT"] == b"6001"
    assert request.env[b"ODD_VALUE"] == "a=b=c ünï".encode()
    assert request.env == dict(os.environb)
    umask = os.umask(0)
    os.umask(umask)
    assert request.umask == umask
    assert request.streams[1] == (sys.stdout.encoding, sys.stdout.errors)


def test_an_unknown_request_version_is_refused() -> None:
    with pytest.raises(ValueError, match="version"):
        launcher.Request(b"9\0/\x0018")
