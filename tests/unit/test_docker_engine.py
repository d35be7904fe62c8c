"""targets.docker_engine without an engine: inspect parsing, drift, endpoint resolution, frames, port probe."""

from __future__ import annotations

import hashlib
import json
import socket
import struct
import threading
from pathlib import Path
from typing import Any

import pytest
from docker.context import ContextAPI

from provision.config import Config, load_config
from provision.errors import DockerUnavailable, DriftDetected, PortInUse
from provision.targets.docker_engine import (
    LABEL_MANAGED,
    LABEL_SETTINGS,
    PGDATA,
    ContainerInfo,
    DockerEngine,
    _container_info,
    _frames,
    check_port_free,
    drift_error,
    find_drift,
    resolve_endpoint,
)

ANONYMOUS = "3f4b9c2e" * 8  # what Docker names the image's VOLUME when nothing is mounted there


def inspect_running() -> dict[str, Any]:
    """`docker inspect chatbi-postgres` as provision creates it, trimmed to realistic keys."""
    return {
        "Id": "5d6c1f0e" * 8,
        "Created": "2024-05-01T10:00:00.000000000Z",
        "Path": "docker-entrypoint.sh",
        "Args": ["postgres"],
        "State": {
            "Status": "running",
            "Running": True,
            "Paused": False,
            "Restarting": False,
            "OOMKilled": False,
            "Dead": False,
            "Pid": 4242,
            "ExitCode": 0,
            "Error": "",
            "StartedAt": "2024-05-01T10:00:01.000000000Z",
            "FinishedAt": "0001-01-01T00:00:00Z",
        },
        "Image": "sha256:" + "ab" * 32,
        "Name": "/chatbi-postgres",
        "RestartCount": 0,
        "HostConfig": {
            "PortBindings": {"5432/tcp": [{"HostIp": "127.0.0.1", "HostPort": "5432"}]},
            "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
        },
        "Mounts": [
            {
                "Type": "volume",
                "Name": "chatbi-pgdata",
                "Source": "/var/lib/docker/volumes/chatbi-pgdata/_data",
                "Destination": "/var/lib/postgresql/data",
                "Driver": "local",
                "Mode": "rw",
                "RW": True,
                "Propagation": "",
            }
        ],
        "Config": {
            "Hostname": "5d6c1f0e5d6c",
            "ExposedPorts": {"5432/tcp": {}},
            "Env": [
                "POSTGRES_USER=chatbi",
                "POSTGRES_PASSWORD=chatbi",
                "POSTGRES_DB=postgres",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/postgresql/17/bin",
                "PGDATA=/var/lib/postgresql/data",
            ],
            "Cmd": ["postgres"],
            "Image": "postgres:17",
            "Labels": {LABEL_MANAGED: "true", LABEL_SETTINGS: "{}", "provision.version": "0.1.0"},
        },
        "NetworkSettings": {"Ports": {"5432/tcp": [{"HostIp": "127.0.0.1", "HostPort": "5432"}]}},
    }


@pytest.fixture
def defaults(tmp_path: Path) -> Config:
    return load_config(None, env={}, cwd=tmp_path)


# ---------------------------------------------------------------- _container_info


def test_container_info_from_a_running_container() -> None:
    info = _container_info(inspect_running())
    assert info.name == "chatbi-postgres"
    assert info.id == "5d6c1f0e" * 8
    assert info.image == "postgres:17"
    assert info.status == "running" and info.running
    assert info.exit_code == 0 and info.restart_count == 0 and not info.oom_killed
    assert info.bind == "127.0.0.1"
    assert info.host_port == 5432
    assert info.volume == "chatbi-pgdata"
    assert info.managed
    assert info.env["POSTGRES_USER"] == "chatbi"
    assert info.env["PATH"].startswith("/usr/local/sbin")
    assert "POSTGRES_PASSWORD" not in repr(info)


def test_container_info_matches_the_default_config(defaults: Config) -> None:
    assert find_drift(_container_info(inspect_running()), defaults) == []


def test_a_bind_mounted_data_dir_is_read_and_compared(tmp_path: Path) -> None:
    attrs = inspect_running()
    attrs["Mounts"] = [{"Type": "bind", "Source": "/srv/xfs/pg", "Destination": "/var/lib/postgresql/data", "RW": True}]
    info = _container_info(attrs)
    assert info.volume is None and info.data_dir == "/srv/xfs/pg"
    same = load_config(None, env={}, cwd=tmp_path, overrides={"data_dir": "/srv/xfs/pg"})
    assert same.volume is None
    assert find_drift(info, same) == []
    moved = same.with_overrides(data_dir="/srv/other")
    assert find_drift(info, moved) == ["data directory is /srv/xfs/pg, config says /srv/other"]
    assert find_drift(_container_info(inspect_running()), same)  # a volume where a data_dir is wanted


def test_anonymous_volume_counts_as_no_volume() -> None:
    attrs = inspect_running()
    attrs["Mounts"][0].update(Name=ANONYMOUS, Source=f"/var/lib/docker/volumes/{ANONYMOUS}/_data")
    assert _container_info(attrs).volume is None


def test_volumes_elsewhere_and_bind_mounts_are_not_the_data_volume() -> None:
    attrs = inspect_running()
    attrs["Mounts"] = [
        {"Type": "volume", "Name": "other", "Destination": "/backup"},
        {"Type": "bind", "Source": "/srv/pg", "Destination": PGDATA},
    ]
    assert _container_info(attrs).volume is None


def test_docker_chosen_port_is_read_from_network_settings() -> None:
    attrs = inspect_running()
    attrs["HostConfig"]["PortBindings"]["5432/tcp"] = [{"HostIp": "127.0.0.1", "HostPort": ""}]
    attrs["NetworkSettings"]["Ports"]["5432/tcp"] = [
        {"HostIp": "127.0.0.1", "HostPort": "49153"},
    ]
    info = _container_info(attrs)
    assert info.bind == "127.0.0.1"
    assert info.host_port == 49153


def test_stopped_container_keeps_its_configured_port() -> None:
    attrs = inspect_running()
    attrs["State"].update(Status="exited", Running=False, ExitCode=1, OOMKilled=True, Error="")
    attrs["NetworkSettings"]["Ports"] = {}
    attrs["RestartCount"] = 3
    info = _container_info(attrs)
    assert info.status == "exited" and not info.running
    assert info.exit_code == 1 and info.oom_killed and info.restart_count == 3
    assert info.host_port == 5432


def test_all_interfaces_and_unpublished_port() -> None:
    attrs = inspect_running()
    attrs["HostConfig"]["PortBindings"]["5432/tcp"] = [{"HostIp": "", "HostPort": "5432"}]
    assert _container_info(attrs).bind == "0.0.0.0"
    attrs["HostConfig"]["PortBindings"] = {}
    attrs["NetworkSettings"]["Ports"] = {"5432/tcp": None}
    info = _container_info(attrs)
    assert info.bind is None and info.host_port is None


def test_sparse_inspect_data_does_not_crash() -> None:
    info = _container_info({"Name": "/x", "Config": None, "State": None, "HostConfig": None, "Mounts": None})
    assert info.name == "x"
    assert info.status == "unknown"
    assert info.env == {} and info.labels == {}
    assert not info.managed


def test_env_values_may_contain_equals_signs() -> None:
    attrs = inspect_running()
    attrs["Config"]["Env"] = ["POSTGRES_PASSWORD=a=b=c", "NOVALUE"]
    assert _container_info(attrs).env == {"POSTGRES_PASSWORD": "a=b=c"}


# ---------------------------------------------------------------- find_drift


def info_with(**changes: Any) -> ContainerInfo:
    base = _container_info(inspect_running())
    values = {f: getattr(base, f) for f in ContainerInfo.__dataclass_fields__}
    values.update(changes)
    return ContainerInfo(**values)


def test_drift_in_image(defaults: Config) -> None:
    assert find_drift(info_with(image="postgres:16"), defaults) == ["image is postgres:16, config says postgres:17"]


def test_drift_in_port_and_bind(defaults: Config) -> None:
    assert find_drift(info_with(host_port=5433), defaults) == ["port is 5433, config says 5432"]
    assert find_drift(info_with(bind="0.0.0.0"), defaults) == ["published on 0.0.0.0, config says 127.0.0.1"]
    (unpublished,) = find_drift(info_with(bind=None, host_port=None), defaults)
    assert "not published" in unpublished


def test_docker_chosen_port_is_not_drift(defaults: Config) -> None:
    assert find_drift(info_with(host_port=49153), defaults.with_overrides(port=0)) == []


def test_drift_in_user(defaults: Config) -> None:
    env = {"POSTGRES_USER": "admin", "POSTGRES_PASSWORD": "chatbi"}
    assert find_drift(info_with(env=env), defaults) == ["user is admin, config says chatbi"]
    # The image's default user is postgres when POSTGRES_USER is unset.
    assert find_drift(info_with(env={"POSTGRES_PASSWORD": "chatbi"}), defaults) == [
        "user is postgres, config says chatbi"
    ]


def test_drift_in_password_never_shows_either_value(defaults: Config) -> None:
    old, new = "old-Secret-1$", "new-Secret-2$"
    info = info_with(env={"POSTGRES_USER": "chatbi", "POSTGRES_PASSWORD": old})
    drift = find_drift(info, defaults.with_overrides(password=new))
    assert drift == ["password differs from the config"]
    error = drift_error(info, drift)
    assert isinstance(error, DriftDetected) and error.exit_code == 4
    assert "--recreate" in error.hint
    everything = f"{drift} {error} {error.hint} {error.detail} {info!r}"
    assert old not in everything and new not in everything


def test_drift_in_volume(defaults: Config) -> None:
    assert find_drift(info_with(volume=None), defaults) == ["data volume is none, config says chatbi-pgdata"]
    assert find_drift(info_with(volume="other"), defaults) == ["data volume is other, config says chatbi-pgdata"]
    assert find_drift(info_with(volume=None), defaults.with_overrides(volume=None)) == []


def test_drift_in_server_settings(defaults: Config) -> None:
    tuned = defaults.with_overrides(server_settings=(("fsync", "off"),))
    assert find_drift(info_with(), tuned) == ["server_settings differ from the config"]
    labels = {LABEL_MANAGED: "true", LABEL_SETTINGS: json.dumps({"fsync": "off"})}
    assert find_drift(info_with(labels=labels), tuned) == []
    # Containers provision did not create carry no settings label to compare.
    assert find_drift(info_with(labels={}), tuned) == []


def test_several_drifts_are_all_reported(defaults: Config) -> None:
    info = info_with(image="postgres:16", host_port=6000, volume=None)
    drift = find_drift(info, defaults)
    assert len(drift) == 3
    message = str(drift_error(info, drift))
    assert message.startswith("container chatbi-postgres does not match the config: ")
    assert "image" in message and "port" in message and "volume" in message


# ---------------------------------------------------------------- resolve_endpoint


def write_context(docker_config: Path, name: str, host: str) -> None:
    meta = docker_config / "contexts" / "meta" / hashlib.sha256(name.encode()).hexdigest()
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(
        json.dumps({"Name": name, "Metadata": {}, "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": False}}})
    )


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A docker CLI config dir with two contexts; `remote` is the current one."""
    directory = tmp_path / "docker-config"
    directory.mkdir()
    write_context(directory, "remote", "tcp://10.1.2.3:2375")
    write_context(directory, "other", "unix:///run/other/docker.sock")
    (directory / "config.json").write_text(json.dumps({"currentContext": "remote"}))
    monkeypatch.setenv("DOCKER_CONFIG", str(directory))
    return directory


def test_current_context_is_honoured(docker_config: Path) -> None:
    assert resolve_endpoint({}) == ("tcp://10.1.2.3:2375", None)


def test_docker_context_env_beats_current_context(docker_config: Path) -> None:
    assert resolve_endpoint({"DOCKER_CONTEXT": "other"}) == ("unix:///run/other/docker.sock", None)


def test_docker_host_beats_contexts(docker_config: Path) -> None:
    env = {"DOCKER_HOST": "unix:///custom.sock", "DOCKER_CONTEXT": "other"}
    assert resolve_endpoint(env) == ("unix:///custom.sock", None)
    assert resolve_endpoint({"DOCKER_HOST": "tcp://1.2.3.4:2376"}) == ("tcp://1.2.3.4:2376", None)


def test_default_context_means_the_sdk_default(docker_config: Path) -> None:
    assert resolve_endpoint({"DOCKER_CONTEXT": "default"}) == (None, None)
    (docker_config / "config.json").write_text("{}")
    assert resolve_endpoint({}) == (None, None)


def test_no_docker_config_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "missing"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_endpoint({}) == (None, None)


def test_unknown_context_is_docker_unavailable(docker_config: Path) -> None:
    with pytest.raises(DockerUnavailable) as info:
        resolve_endpoint({"DOCKER_CONTEXT": "nope"})
    assert info.value.exit_code == 3
    assert "nope" in str(info.value)
    assert "docker context ls" in info.value.hint


def test_resolve_endpoint_with_a_monkeypatched_context_api(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeContext:
        name = "ci"
        Host = "ssh://builder@ci"
        TLSConfig = None

    asked: list[str | None] = []

    def get_context(name: str | None = None) -> FakeContext:
        asked.append(name)
        return FakeContext()

    monkeypatch.setattr(ContextAPI, "get_context", staticmethod(get_context))
    assert resolve_endpoint({"DOCKER_CONTEXT": "ci"}) == ("ssh://builder@ci", None)
    assert resolve_endpoint({"DOCKER_HOST": "unix:///x.sock"}) == ("unix:///x.sock", None)
    assert resolve_endpoint({"DOCKER_CONTEXT": "default"}) == (None, None)
    assert asked == ["ci"]  # DOCKER_HOST and the default context never load the SDK's context store


def test_corrupted_context_is_docker_unavailable(docker_config: Path) -> None:
    meta = docker_config / "contexts" / "meta" / hashlib.sha256(b"remote").hexdigest() / "meta.json"
    meta.write_text("{not json")
    with pytest.raises(DockerUnavailable):
        resolve_endpoint({})


@pytest.mark.parametrize("env_key", ["DOCKER_HOST", "DOCKER_CONTEXT"])
def test_connect_to_a_missing_engine_names_the_endpoint(docker_config: Path, env_key: str) -> None:
    env = {"DOCKER_HOST": "unix:///nonexistent/unit.sock"} if env_key == "DOCKER_HOST" else {"DOCKER_CONTEXT": "other"}
    with pytest.raises(DockerUnavailable) as info:
        DockerEngine.connect(env)
    shown = "unix:///nonexistent/unit.sock" if env_key == "DOCKER_HOST" else "unix:///run/other/docker.sock"
    assert shown in str(info.value)
    assert info.value.exit_code == 3
    assert "DOCKER_HOST" in info.value.hint


# ---------------------------------------------------------------- the attach stream and the port probe


def test_frames_demultiplexes_stdout_and_stderr() -> None:
    left, right = socket.socketpair()
    payloads = [(1, b"hello "), (2, b"ERROR: x\n"), (1, b""), (1, b"world" * 20000)]

    def feed() -> None:
        with right:
            for stream, data in payloads:
                right.sendall(struct.pack(">BxxxL", stream, len(data)) + data)

    writer = threading.Thread(target=feed)
    writer.start()
    with left:
        got = list(_frames(left))
    writer.join()
    assert got == payloads


def test_frames_stops_at_a_truncated_frame() -> None:
    left, right = socket.socketpair()
    with right:
        right.sendall(struct.pack(">BxxxL", 1, 10) + b"abc")
    with left:
        assert list(_frames(left)) == [(1, b"abc")]


def test_check_port_free_names_a_taken_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(PortInUse) as info:
            check_port_free("127.0.0.1", port)
    assert str(port) in str(info.value)
    assert info.value.exit_code == 4
    assert "port:" in info.value.hint and "PROVISION_PORT" in info.value.hint


def test_check_port_free_accepts_a_free_port() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    check_port_free("127.0.0.1", port)  # closed again: free


def test_drift_in_password_free_logins(defaults: Config) -> None:
    trusting = info_with(
        env={"POSTGRES_USER": "chatbi", "POSTGRES_PASSWORD": "chatbi", "POSTGRES_HOST_AUTH_METHOD": "trust"}
    )
    assert find_drift(trusting, defaults) == ["logins need no password, config says otherwise"]
    assert find_drift(trusting, defaults.with_overrides(trust_local=True)) == []
    assert find_drift(info_with(), defaults.with_overrides(trust_local=True)) == [
        "logins need a password, config says otherwise"
    ]
