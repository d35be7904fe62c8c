"""provision.config: defaults, discovery, precedence, interpolation and every way a config can be wrong."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from provision.config import (
    CHATBI_TABLES,
    DEMO_TABLES,
    Config,
    is_local_host,
    load_config,
)
from provision.errors import ConfigError

SECRET = "s3cr3t-Value-that-must-not-leak"


def load(
    path: str | Path | None = None, *, env: dict[str, str] | None = None, cwd: Path | None = None, **overrides: Any
) -> Config:
    return load_config(path, overrides=overrides, env={} if env is None else env, cwd=cwd)


def config_error(path: str | Path | None = None, **kwargs: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(path, **kwargs)
    assert info.value.exit_code == 2
    return info.value


# ---------------------------------------------------------------- defaults


def test_builtin_defaults_serve_chatbi_without_any_file(tmp_path: Path) -> None:
    cfg = load(cwd=tmp_path)
    assert cfg.target == "docker"
    assert cfg.container == "chatbi-postgres"
    assert cfg.image == "postgres:17"
    assert cfg.port == 5432
    assert cfg.bind == "127.0.0.1"
    assert cfg.user == "chatbi"
    assert cfg.password == "chatbi"
    assert cfg.volume == "chatbi-pgdata"
    assert cfg.timeout == 60.0
    assert cfg.source == "built-in defaults"
    assert cfg.base_dir == tmp_path
    assert [db.name for db in cfg.databases] == ["chatbi", "chatbi_demo"]
    chatbi, demo = cfg.databases
    assert chatbi.alembic_revision == "0001_initial_schema"
    assert chatbi.tables == CHATBI_TABLES and len(CHATBI_TABLES) == 15
    assert chatbi.single_transaction is True and chatbi.demo is False
    assert demo.alembic_revision is None
    assert demo.demo is True
    assert demo.tables == DEMO_TABLES
    assert cfg.database("chatbi") is chatbi


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = load(cwd=tmp_path)
    with pytest.raises(AttributeError):
        cfg.port = 1  # type: ignore[misc]
    changed = cfg.with_overrides(port=6000)
    assert changed.port == 6000 and cfg.port == 5432


def test_unknown_database_lookup_suggests_a_name(tmp_path: Path) -> None:
    cfg = load(cwd=tmp_path)
    with pytest.raises(ConfigError) as info:
        cfg.database("chatbi_dmeo")
    assert "chatbi_dmeo" in str(info.value)
    assert "did you mean 'chatbi_demo'" in info.value.hint


def test_empty_config_file_means_defaults_but_names_the_file(tmp_path: Path, write_yaml: Callable[..., Path]) -> None:
    path = write_yaml("# nothing here\n")
    cfg = load(path, cwd=tmp_path)
    assert cfg.container == "chatbi-postgres"
    assert cfg.source == str(path)
    assert cfg.base_dir == path.parent


# ---------------------------------------------------------------- discovery


def test_discovery_explicit_path_beats_env_and_cwd(tmp_path: Path, write_yaml: Callable[..., Path]) -> None:
    explicit = write_yaml("container: from-flag\n", "flag.yaml")
    from_env = write_yaml("container: from-env\n", "env.yaml")
    write_yaml("container: from-cwd\n")
    cfg = load(explicit, env={"PROVISION_CONFIG": str(from_env)}, cwd=tmp_path)
    assert cfg.container == "from-flag"
    assert cfg.source == str(explicit)


def test_discovery_env_beats_cwd(tmp_path: Path, write_yaml: Callable[..., Path]) -> None:
    from_env = write_yaml("container: from-env\n", "env.yaml")
    write_yaml("container: from-cwd\n")
    cfg = load(env={"PROVISION_CONFIG": str(from_env)}, cwd=tmp_path)
    assert cfg.container == "from-env"


def test_discovery_falls_back_to_provision_yaml_in_cwd(tmp_path: Path, write_yaml: Callable[..., Path]) -> None:
    path = write_yaml("container: from-cwd\n")
    cfg = load(cwd=tmp_path)
    assert cfg.container == "from-cwd"
    assert cfg.source == str(path)


def test_discovery_empty_provision_config_is_ignored(tmp_path: Path, write_yaml: Callable[..., Path]) -> None:
    write_yaml("container: from-cwd\n")
    assert load(env={"PROVISION_CONFIG": ""}, cwd=tmp_path).container == "from-cwd"


def test_relative_paths_resolve_from_cwd(tmp_path: Path, write_yaml: Callable[..., Path]) -> None:
    write_yaml("container: nested\n", "provision.yaml", tmp_path / "conf")
    assert load("conf/provision.yaml", cwd=tmp_path).container == "nested"
    assert load(env={"PROVISION_CONFIG": "conf/provision.yaml"}, cwd=tmp_path).container == "nested"


@pytest.mark.parametrize(
    ("kwargs", "origin"),
    [({"path": "missing.yaml"}, "--config"), ({"env": {"PROVISION_CONFIG": "missing.yaml"}}, "PROVISION_CONFIG")],
)
def test_missing_config_file_is_named(tmp_path: Path, kwargs: dict[str, Any], origin: str) -> None:
    error = config_error(cwd=tmp_path, **kwargs)
    assert str(tmp_path / "missing.yaml") in str(error)
    assert origin in str(error)
    assert error.hint


# ---------------------------------------------------------------- precedence


def test_precedence_flags_over_env_over_yaml_over_defaults_key_by_key(
    tmp_path: Path, write_yaml: Callable[..., Path]
) -> None:
    path = write_yaml("port: 6000\nimage: img:yaml\nuser: yamluser\ntimeout: 10\n")
    cfg = load(
        path,
        env={"PROVISION_PORT": "7000", "PROVISION_IMAGE": "img:env", "PROVISION_CACHE": "off"},
        image="img:flag",
        user=None,  # an unset flag does not override anything
    )
    assert cfg.image == "img:flag"  # flag > env > yaml
    assert cfg.port == 7000  # env > yaml
    assert cfg.user == "yamluser"  # yaml > default
    assert cfg.timeout == 10.0
    assert cfg.cache is False  # env > default
    assert cfg.container == "chatbi-postgres"  # default
    assert cfg.password == "chatbi"


def test_env_values_are_coerced(tmp_path: Path) -> None:
    cfg = load(
        env={
            "PROVISION_ALLOW_REMOTE": "yes",
            "PROVISION_TIMEOUT": "2.5",
            "PROVISION_DEMO_SCALE": "3",
            "PROVISION_TARGET": "server",
            "PROVISION_HOST": "db.internal",
            "PROVISION_VOLUME": "",
            "PROVISION_CONFIG": "",
            "PROVISION_DEBUG": "1",
        },
        cwd=tmp_path,
    )
    assert cfg.allow_remote is True
    assert cfg.timeout == 2.5
    assert cfg.demo_scale == 3
    assert cfg.target == "server" and cfg.host == "db.internal"
    assert cfg.volume is None
    assert not cfg.is_local_server


def test_flags_override_env(tmp_path: Path) -> None:
    cfg = load(env={"PROVISION_PORT": "7000"}, cwd=tmp_path, port=7001, demo_scale=4)
    assert cfg.port == 7001
    assert cfg.demo_scale == 4


def test_volume_default_follows_a_changed_container(tmp_path: Path, write_yaml: Callable[..., Path]) -> None:
    assert load(cwd=tmp_path, container="myapp").volume == "myapp-pgdata"
    assert load(env={"PROVISION_CONTAINER": "envapp"}, cwd=tmp_path).volume == "envapp-pgdata"
    assert load(write_yaml("container: yamlapp\n"), cwd=tmp_path).volume == "yamlapp-pgdata"
    # An explicit volume, or an explicit "no volume", is kept.
    assert load(write_yaml("container: a\nvolume: shared\n", "b.yaml"), cwd=tmp_path).volume == "shared"
    assert load(write_yaml("container: a\nvolume: null\n", "c.yaml"), cwd=tmp_path).volume is None
    assert load(cwd=tmp_path, container="chatbi-postgres").volume == "chatbi-pgdata"


# ---------------------------------------------------------------- interpolation


def test_interpolation_of_env_vars_with_and_without_defaults(tmp_path: Path, write_yaml: Callable[..., Path]) -> None:
    path = write_yaml(
        "image: ${IMG:-postgres:16}\n"
        "host: ${DB_HOST}\n"
        'password: "${DB_PASSWORD}"\n'
        "user: ${EMPTY:-fallback}\n"
        "container: pre-${NAME}-post\n"
    )
    env = {"DB_HOST": "db1", "DB_PASSWORD": "pa ss", "EMPTY": "", "NAME": "mid"}
    cfg = load(path, env=env)
    assert cfg.image == "postgres:16"  # unset -> default
    assert cfg.host == "db1"
    assert cfg.password == "pa ss"
    assert cfg.user == "fallback"  # set but empty -> default
    assert cfg.container == "pre-mid-post"
    assert load(path, env={**env, "IMG": "img:env"}).image == "img:env"


def test_double_dollar_escapes_interpolation(write_yaml: Callable[..., Path]) -> None:
    path = write_yaml("password: 'pa$$word-$${NOT_A_VAR}-$plain'\n")
    assert load(path).password == "pa$word-${NOT_A_VAR}-$plain"


def test_missing_env_var_names_variable_key_and_line(write_yaml: Callable[..., Path]) -> None:
    path = write_yaml("port: 5432\nuser: chatbi\npassword: ${DB_PASSWORD}\n")
    error = config_error(path)
    text = str(error)
    assert "DB_PASSWORD" in text
    assert "password" in text
    assert "line 3" in text
    assert str(path) in text
    assert "${DB_PASSWORD:-default}" in error.hint


def test_interpolation_reaches_nested_values(tmp_path: Path, write_yaml: Callable[..., Path]) -> None:
    (tmp_path / "a.sql").write_text("select 1;\n")
    path = write_yaml("databases:\n  app:\n    sql: ${SQL_FILE}\n    variables:\n      who: ${WHO:-world}\n")
    cfg = load(path, env={"SQL_FILE": "a.sql"})
    assert cfg.databases[0].sql == ("a.sql",)
    assert cfg.databases[0].variables == (("who", "world"),)
    error = config_error(path)
    assert "SQL_FILE" in str(error) and "line 3" in str(error) and "databases.app.sql" in str(error)


# ---------------------------------------------------------------- bad keys, types, YAML


def test_unknown_key_gets_did_you_mean_and_line(write_yaml: Callable[..., Path]) -> None:
    path = write_yaml("image: postgres:17\nprot: 5433\n")
    error = config_error(path)
    assert "'prot'" in str(error)
    assert "did you mean 'port'" in str(error)
    assert "line 2" in str(error)
    assert str(path) in str(error)
    assert "port" in error.hint


def test_unknown_database_key_gets_did_you_mean(write_yaml: Callable[..., Path]) -> None:
    path = write_yaml("databases:\n  app:\n    sq1: a.sql\n")
    error = config_error(path)
    assert "did you mean 'sql'" in str(error)
    assert "line 3" in str(error)


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        ("image: x\nport: abc\n", "port", 2),
        ("port: 5432\ntimeout: soon\n", "timeout", 2),
        ("cache: maybe\n", "cache", 1),
        ("\n\nkeep_templates: 0\n", "keep_templates", 3),
        ("demo_scale: 1.5\n", "demo_scale", 1),
        ("target: cloud\n", "target", 1),
        ("cleanup: never\n", "cleanup", 1),
        ("bind: localhost\n", "bind", 1),
        ("container: 'bad name'\n", "container", 1),
        ("image: ''\n", "image", 1),
        ("image: [a, b]\n", "image", 1),
        ("allow_remote: 2\n", "allow_remote", 1),
        ("port: true\n", "port", 1),
        ("user: ''\n", "user", 1),
    ],
)
def test_wrong_type_names_key_file_and_line(write_yaml: Callable[..., Path], text: str, key: str, line: int) -> None:
    path = write_yaml(text)
    error = config_error(path)
    assert str(error).startswith(f"{key} must be")
    assert str(path) in str(error)
    assert f"line {line}" in str(error)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            "databases:\n  app:\n    sql: a.sql\n    single_transaction: 'no'\n",
            "single_transaction must be true or false",
        ),
        ("databases:\n  app:\n    sql: [a.sql, 3]\n", "sql must be a string or a list of strings"),
        ("databases:\n  app:\n    sql: a.sql\n    alembic_revision: " + "r" * 33 + "\n", "at most 32 characters"),
        ("databases:\n  app:\n    sql: a.sql\n    variables: [a]\n", "variables must be a mapping"),
        ("databases:\n  app:\n    sql: a.sql\n    variables: {'bad-name': 1}\n", "invalid psql variable name"),
        ('databases:\n  app:\n    sql: a.sql\n    variables: {v: "a\\nb"}\n', "single-line value"),
        ("databases:\n  app: {}\n", "has neither `sql:` sources nor `migrations:`"),
        ("databases:\n  app:\n", "has neither `sql:` sources nor `migrations:`"),
        ("databases:\n  app: a.sql\n", "must be a mapping of settings"),
        ("databases: [app]\n", "databases must be a mapping"),
        ("databases: {}\n", "no databases configured"),
        ("server_settings: [fsync]\n", "server_settings must be a mapping"),
        ("server_settings: {'Bad-Name': 1}\n", "invalid server setting name"),
        ("server_settings: {work_mem: [1]}\n", "must be a single value"),
        ("- a\n- b\n", "must be a mapping of keys"),
        ("port: 1\nport: 2\n", "duplicate key 'port'"),
    ],
)
def test_structural_errors(write_yaml: Callable[..., Path], text: str, fragment: str) -> None:
    path = write_yaml(text)
    error = config_error(path)
    assert fragment in str(error)
    assert str(path) in str(error)


def test_database_entries_are_parsed(tmp_path: Path, write_yaml: Callable[..., Path]) -> None:
    path = write_yaml(
        "server_settings:\n  fsync: off\n  work_mem: 64MB\n  max_connections: 200\n"
        "databases:\n"
        "  app:\n    sql: [a.sql, 'migrations/*.sql']\n    tables: users\n    alembic_revision: 12\n"
        "    single_transaction: false\n    variables: {n: 5, flag: true}\n"
        "  other-db:\n    sql: b.sql\n    demo: true\n"
    )
    cfg = load(path)
    app, other = cfg.databases
    assert app.sql == ("a.sql", "migrations/*.sql")
    assert app.tables == ("users",)
    assert app.alembic_revision == "12"
    assert app.single_transaction is False
    assert app.variables == (("n", "5"), ("flag", "True"))
    assert other.name == "other-db" and other.demo is True
    assert cfg.server_settings == (("fsync", "off"), ("work_mem", "64MB"), ("max_connections", "200"))


def test_malformed_yaml_gives_line_number(write_yaml: Callable[..., Path]) -> None:
    path = write_yaml("port: 5432\n  bad: indent\n")
    error = config_error(path)
    assert "invalid YAML" in str(error)
    assert str(path) in str(error)
    assert "line 2" in str(error)
    assert error.hint


def test_unreadable_config_file(tmp_path: Path) -> None:
    path = tmp_path / "provision.yaml"
    path.write_bytes(b"port: \xff\xfe\n")
    error = config_error(path)
    assert "cannot read config file" in str(error)


# ---------------------------------------------------------------- environment variables


def test_bad_env_value_names_the_variable(tmp_path: Path) -> None:
    error = config_error(env={"PROVISION_PORT": "abc"}, cwd=tmp_path)
    assert "port must be a whole number" in str(error)
    assert "PROVISION_PORT" in str(error)


def test_unknown_env_var_gets_did_you_mean(tmp_path: Path) -> None:
    error = config_error(env={"PROVISION_PROT": "5433"}, cwd=tmp_path)
    assert "PROVISION_PROT" in str(error)
    assert "did you mean 'PROVISION_PORT'" in str(error)
    assert "PROVISION_PORT" in error.hint


def test_unrelated_env_vars_are_ignored(tmp_path: Path) -> None:
    cfg = load(env={"PORT": "1", "PROVISIONING": "x", "DB_PASSWORD": "y"}, cwd=tmp_path)
    assert cfg.port == 5432


def test_fault_injection_variable_is_not_a_config_error(tmp_path: Path) -> None:
    cfg = load(env={"PROVISION_KILL_AT": "stage-created"}, cwd=tmp_path)
    assert cfg.port == 5432


# ---------------------------------------------------------------- ports


@pytest.mark.parametrize("port", ["65536", "-1", "100000"])
def test_port_out_of_range_everywhere(tmp_path: Path, write_yaml: Callable[..., Path], port: str) -> None:
    assert "port must be a port number" in str(config_error(write_yaml(f"port: {port}\n", "ports.yaml")))
    assert "PROVISION_PORT" in str(config_error(env={"PROVISION_PORT": port}, cwd=tmp_path))
    assert "--port" in str(config_error(cwd=tmp_path, port=int(port)))


@pytest.mark.parametrize("port", [0, 1, 5432, 65535])
def test_port_in_range(tmp_path: Path, port: int) -> None:
    assert load(cwd=tmp_path, port=port).port == port


# ---------------------------------------------------------------- database names


@pytest.mark.parametrize(
    "name",
    [
        "chat'bi",
        'chat"bi',
        "chatbi;drop",
        "chat bi",
        "a" * 64,
        "my__db",
        "postgres",
        "template0",
        "template1",
        "1abc",
        "",
        "é",
    ],
)
def test_invalid_database_names(tmp_path: Path, write_yaml: Callable[..., Path], name: str) -> None:
    (tmp_path / "a.sql").write_text("select 1;\n")
    path = write_yaml(yaml.safe_dump({"databases": {name: {"sql": "a.sql"}}}))
    error = config_error(path)
    assert "database name" in str(error)
    assert str(path) in str(error)


def test_database_name_of_63_bytes_is_fine_and_64_is_not(tmp_path: Path, write_yaml: Callable[..., Path]) -> None:
    ok = load(write_yaml(yaml.safe_dump({"databases": {"a" * 63: {"sql": "a.sql"}}})))
    assert ok.databases[0].name == "a" * 63
    error = config_error(write_yaml(yaml.safe_dump({"databases": {"b" * 64: {"sql": "a.sql"}}})))
    assert "64 bytes" in str(error) and "63" in str(error)


def test_database_name_with_trailing_newline_is_rejected(write_yaml: Callable[..., Path]) -> None:
    config_error(write_yaml('databases:\n  "app\\n":\n    sql: a.sql\n'))


# ---------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    "text",
    [
        f"password: [{SECRET}]\n",
        f"password: {{value: {SECRET}}}\n",
        "password: true\n",
        "password: ''\n",
    ],
)
def test_password_never_appears_in_type_errors(write_yaml: Callable[..., Path], text: str) -> None:
    path = write_yaml(text)
    error = config_error(path)
    assert str(error).startswith("password must be")
    assert "<hidden>" in str(error)
    assert SECRET not in f"{error} {error.hint} {error.detail}"
    assert "True" not in str(error)
    assert "line 1" in str(error)


def test_password_never_appears_in_yaml_errors(write_yaml: Callable[..., Path]) -> None:
    error = config_error(write_yaml(f'port: 5432\npassword: "{SECRET}\n'))
    assert SECRET not in f"{error} {error.hint}"


def test_password_never_appears_in_env_errors(tmp_path: Path) -> None:
    error = config_error(env={"PROVISION_PASSWORD": "", "PROVISION_PORT": "5432"}, cwd=tmp_path)
    assert "<hidden>" in str(error)


def test_password_is_not_in_repr_of_config(write_yaml: Callable[..., Path]) -> None:
    cfg = load(write_yaml(f"password: {SECRET}\n"))
    assert cfg.password == SECRET
    assert SECRET not in repr(cfg)
    assert SECRET not in str(cfg)


def test_numeric_looking_password_is_kept_or_refused(write_yaml: Callable[..., Path]) -> None:
    path = write_yaml("password: 0123\n")
    try:
        cfg = load(path)
    except ConfigError:
        return
    assert cfg.password == "0123"


# ---------------------------------------------------------------- misc


def test_housekeeping_job_carries_a_config_the_child_can_build_from(
    tmp_path: Path, write_yaml: Callable[..., Path]
) -> None:
    """The detached tidy-up gets the config as a pickle: it must resolve the same sources, with the
    same variables and password, from any working directory."""
    import pickle

    from provision.builds.pipeline import plan_database
    from provision.endpoint import Endpoint
    from provision.housekeeping import Job

    (tmp_path / "a.sql").write_text("select 1;\n")
    path = write_yaml(
        "container: app\nport: 0\nserver_settings: {fsync: off}\n"
        "databases:\n  app:\n    sql: [a.sql]\n    tables: [t1, t2]\n    variables: {n: 2}\n"
        "    alembic_revision: abc\n    single_transaction: false\n"
    )
    cfg = load(path, env={"PROVISION_PASSWORD": "p@ss w'rd\"$\\é"})
    job = pickle.loads(pickle.dumps(Job(cfg, Endpoint("127.0.0.1", 5432, "u", "p"), ("app",), True)))
    plan = plan_database(job.config, job.config.database("app"))
    original = plan_database(cfg, cfg.database("app"))
    assert [f.path for f in plan.files] == [tmp_path / "a.sql"]
    assert plan.variables == (("n", "2"),)
    assert plan.content_hash(170000) == original.content_hash(170000)
    assert job.config.password == "p@ss w'rd\"$\\é"
    assert dict(job.config.server_settings) == {"fsync": "off"}


@pytest.mark.parametrize(
    ("host", "local"),
    [("127.0.0.1", True), ("localhost", True), ("::1", True), ("/var/run/postgresql", True), ("10.0.0.5", False)],
)
def test_is_local_host(host: str, local: bool) -> None:
    assert is_local_host(host) is local
    assert is_local_host("db.example.com") is False


def test_extensions_are_parsed_and_part_of_the_content_hash(write_yaml: Callable[..., Path], tmp_path: Path) -> None:
    from provision.builds.pipeline import plan_database

    (tmp_path / "a.sql").write_text("select 1;\n")
    plain = load(write_yaml("databases:\n  app:\n    sql: [a.sql]\n"))
    with_ext = load(write_yaml("databases:\n  app:\n    sql: [a.sql]\n    extensions: [vector, postgis, vector]\n"))
    other = load(write_yaml("databases:\n  app:\n    sql: [a.sql]\n    extensions: [vector]\n"))
    assert plain.database("app").extensions == ()
    assert with_ext.database("app").extensions == ("vector", "postgis")
    hashes = {plan_database(c, c.database("app")).content_hash(180000) for c in (plain, with_ext, other)}
    assert len(hashes) == 3


@pytest.mark.parametrize("value", ["[1]", "['vector; drop']", "{a: b}", "['']"])
def test_bad_extension_names_are_refused(write_yaml: Callable[..., Path], tmp_path: Path, value: str) -> None:
    (tmp_path / "a.sql").write_text("select 1;\n")
    with pytest.raises(ConfigError, match="extensions must be a list of extension names"):
        load(write_yaml(f"databases:\n  app:\n    sql: [a.sql]\n    extensions: {value}\n"))


def test_data_dir_is_resolved_beside_the_config_and_replaces_the_volume(
    write_yaml: Callable[..., Path], tmp_path: Path
) -> None:
    (tmp_path / "a.sql").write_text("select 1;\n")
    cfg = load(write_yaml("data_dir: pgdata\ndatabases:\n  app:\n    sql: [a.sql]\n"))
    assert cfg.data_dir == str(tmp_path / "pgdata")
    assert cfg.volume is None
    error = config_error(write_yaml("volume: mine\ndata_dir: /srv/pg\ndatabases:\n  app:\n    sql: [a.sql]\n"))
    assert "both `volume:` (mine) and `data_dir:` are set" in error.message
    bad = config_error(write_yaml("data_dir: /srv/pg:ro\ndatabases:\n  app:\n    sql: [a.sql]\n"))
    assert "a directory path" in bad.message
