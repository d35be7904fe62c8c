"""Resolves configuration (flags > PROVISION_* environment > YAML > defaults) into a frozen Config."""

from __future__ import annotations

import glob
import ipaddress
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .endpoint import connect_host
from .errors import ConfigError
from .names import MAX_IDENTIFIER_BYTES, validate_database_name

if TYPE_CHECKING:
    import yaml

CHATBI_TABLES = (
    "datasources",
    "chat_sessions",
    "chat_messages",
    "visualizations",
    "query_history",
    "chat_history",
    "app_users",
    "user_sessions",
    "saved_queries",
    "mdl_projects",
    "mdl_models",
    "mdl_fields",
    "mdl_relationships",
    "error_patterns",
    "sql_corrections",
)
DEMO_TABLES = ("categories", "products", "customers", "orders", "order_items")

# Where the server can run: the names of targets.KINDS, which says what each one is (a test
# keeps the two equal; config cannot import targets, which imports config).
TARGET_KINDS = ("docker", "server")
DEFAULT_CONTAINER = "chatbi-postgres"
DEFAULT_VOLUME = "chatbi-pgdata"
BUILTIN_PREFIX = "builtin:"

_CONTAINER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SETTING_NAME = re.compile(r"^[a-z_][a-z0-9_.]*$")
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# What extension control files are called: vector, postgis, uuid-ossp, pg_trgm.
_EXTENSION_NAME = re.compile(r"^[a-z_][a-z0-9_-]*$")
_INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# What `env:` values may say about the private copy; filled in when the command runs.
COPY_PLACEHOLDERS = ("host", "port", "user", "password", "database", "url")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class MigrationsConfig:
    """The app's own migrations, run after the SQL sources (and the stamp) against the private copy."""

    alembic: str | None = None  # the app's alembic.ini: Alembic mode
    revision: str = "head"  # the Alembic revision to reach
    command: tuple[str, ...] = ()  # default: alembic -c {ini} upgrade {revision}
    cwd: str | None = None  # default: the alembic.ini's directory, else the config's
    url_env: str = "DATABASE_URL"
    env: tuple[tuple[str, str], ...] = ()  # more variables for the command, with {database}-style placeholders
    inputs: tuple[str, ...] = ()  # files, directories or globs whose change means a rebuild
    timeout: float = 600.0


@dataclass(frozen=True)
class SeedConfig:
    """The app's initial data, loaded into the private copy after the migrations: SQL files, a command, or both."""

    sql: tuple[str, ...] = ()  # run by psql, like the database's own sources
    command: tuple[str, ...] = ()
    cwd: str | None = None  # default: the config's directory
    url_env: str = "DATABASE_URL"
    env: tuple[tuple[str, str], ...] = ()
    inputs: tuple[str, ...] = ()  # default for a command: the files its arguments name
    timeout: float = 600.0


@dataclass(frozen=True)
class DatabaseConfig:
    """One database that `fresh` builds, and how."""

    name: str
    sql: tuple[str, ...] = ()
    alembic_revision: str | None = None
    tables: tuple[str, ...] = ()
    single_transaction: bool = True
    demo: bool = False
    variables: tuple[tuple[str, str], ...] = ()
    migrations: MigrationsConfig | None = None
    seed: SeedConfig | None = None
    # Created in the private copy before the SQL runs (CREATE EXTENSION IF NOT EXISTS).
    extensions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Config:
    """Everything provision needs to know, resolved once."""

    target: str = "docker"  # one of TARGET_KINDS
    container: str = DEFAULT_CONTAINER
    image: str = "postgres:17"
    volume: str | None = DEFAULT_VOLUME
    tmpfs: bool = False
    # A host directory bind-mounted as the data directory instead of the volume: how a user puts
    # the data on a filesystem with reflinks (XFS, btrfs), where PostgreSQL 18 clones copies.
    data_dir: str | None = None
    trust_local: bool = False  # the container accepts logins without a password (a throwaway test server)
    bind: str = "127.0.0.1"
    # docker: the address the published port is reached at; None derives it (DOCKER_HOST's host, else bind).
    connect_host: str | None = None
    port: int = 5432
    host: str = "127.0.0.1"
    user: str = "chatbi"
    password: str = field(default="chatbi", repr=False)
    timeout: float = 60.0
    demo_scale: int = 1
    server_settings: tuple[tuple[str, str], ...] = ()
    cache: bool = True
    keep_templates: int = 3
    cleanup: Literal["background", "sync"] = "background"
    allow_remote: bool = False
    snapshot_limit_mb: int = 0  # refuse a snapshot save that takes snapshots past this; 0: no limit
    lease_ttl: float = 7200.0  # seconds a lease lives unless renewed (`provision lease --ttl`)
    lease_max_bytes: int = 0  # cap on what leases keep on the server (copies and templates); 0: no cap
    lease_spares: int = 1  # copies of a template made ahead, so a lease is a rename instead of a clone
    databases: tuple[DatabaseConfig, ...] = ()
    # Set by the target's for_tests(), never from YAML: this is provision's own test server.
    test_server: bool = False
    # Where relative SQL paths are resolved from, and what to call the config in messages.
    base_dir: Path = field(default_factory=Path.cwd)
    source: str = "built-in defaults"

    def database(self, name: str) -> DatabaseConfig:
        for db in self.databases:
            if db.name == name:
                return db
        known = ", ".join(d.name for d in self.databases) or "none"
        raise ConfigError(
            f"database {name!r} is not in the configuration ({self.source})",
            hint=f"configured databases: {known}{_did_you_mean(name, [d.name for d in self.databases])}",
        )

    @property
    def is_local_server(self) -> bool:
        return is_local_host(self.host)

    def with_overrides(self, **changes: Any) -> Config:
        return replace(self, **changes)


def builtin_sql_dir() -> Path:
    """The SQL shipped with provision (inside the wheel, or `sql/` in a source checkout)."""
    packaged = Path(__file__).resolve().parent / "sql"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "sql"


def default_databases() -> tuple[DatabaseConfig, ...]:
    return (
        DatabaseConfig(
            name="chatbi",
            sql=(BUILTIN_PREFIX + "chatbi/init_app_tables.sql",),
            alembic_revision="0001_initial_schema",
            tables=CHATBI_TABLES,
        ),
        DatabaseConfig(
            name="chatbi_demo",
            sql=(BUILTIN_PREFIX + "chatbi_demo/demo_data.sql",),
            tables=DEMO_TABLES,
            demo=True,
        ),
    )


# key -> (type name, environment variable or None)
_SCALAR_KEYS: dict[str, str] = {
    "target": "target",
    "container": "name",
    "image": "str",
    "volume": "optional_name",
    "tmpfs": "bool",
    "data_dir": "optional_path",
    "trust_local": "bool",
    "bind": "ip",
    "connect_host": "optional_host",
    "port": "port",
    "host": "str",
    "user": "identifier",
    "password": "str",
    "timeout": "positive_float",
    "demo_scale": "positive_int",
    "cache": "bool",
    "keep_templates": "positive_int",
    "cleanup": "cleanup",
    "allow_remote": "bool",
    "snapshot_limit_mb": "non_negative_int",
    "lease_ttl": "duration",
    "lease_max_bytes": "non_negative_int",
    "lease_spares": "non_negative_int",
}
_MAPPING_KEYS = ("server_settings", "databases")
TOP_KEYS = tuple(_SCALAR_KEYS) + _MAPPING_KEYS
DATABASE_KEYS = (
    "sql",
    "alembic_revision",
    "tables",
    "single_transaction",
    "demo",
    "variables",
    "migrations",
    "seed",
    "extensions",
)
MIGRATIONS_KEYS = ("alembic", "revision", "command", "cwd", "url_env", "env", "inputs", "timeout")
SEED_KEYS = ("sql", "command", "cwd", "url_env", "env", "inputs", "timeout")
ENV_PREFIX = "PROVISION_"
# Variables that are not config keys but belong to provision.
_ENV_OTHER = frozenset(
    {
        "PROVISION_CONFIG",
        "PROVISION_DEBUG",
        "PROVISION_KILL_AT",  # the fault-injection hook (pipeline.checkpoint)
        # Read by the project's scripts, not by provision; often exported in the same shell.
        "PROVISION_TEST_IMAGE",
        "PROVISION_DEBIAN_SUITE",
        "PROVISION_DEBIAN_MIRROR",
        "PROVISION_BUILD_CA_CERTS",
        "PROVISION_EXTRA_PIP",
    }
)


def env_name(key: str) -> str:
    return ENV_PREFIX + key.upper()


def find_config_file(explicit: str | os.PathLike[str] | None, env: Mapping[str, str], cwd: Path) -> Path | None:
    """-c/--config, then PROVISION_CONFIG, then ./provision.yaml; None when there is none."""
    if explicit is not None:
        path = Path(explicit)
        origin = "--config"
    elif env.get("PROVISION_CONFIG"):
        path = Path(env["PROVISION_CONFIG"])
        origin = "PROVISION_CONFIG"
    else:
        candidate = cwd / "provision.yaml"
        return candidate if candidate.is_file() else None
    if not path.is_absolute():
        path = cwd / path
    if not path.is_file():
        raise ConfigError(
            f"config file not found: {path} (from {origin})",
            hint="check the path, or leave it out to use ./provision.yaml or the built-in ChatBI defaults",
        )
    return path


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Config:
    """Resolve the configuration once: flags (`overrides`) > PROVISION_* > YAML > defaults."""
    env = os.environ if env is None else env
    cwd = Path.cwd() if cwd is None else cwd
    config_path = find_config_file(path, env, cwd)

    values: dict[str, Any] = {}
    databases: tuple[DatabaseConfig, ...] = default_databases()
    base_dir = cwd
    source = "built-in defaults"
    if config_path is not None:
        base_dir = config_path.parent
        source = str(config_path)
        raw, lines = _read_yaml(config_path, env)
        for key, value in raw.items():
            where = _where(source, lines, (key,))
            if key not in TOP_KEYS:
                raise ConfigError(
                    f"unknown key {key!r} in {where}{_did_you_mean(key, TOP_KEYS)}",
                    hint=f"valid keys: {', '.join(TOP_KEYS)}",
                )
            if key == "databases":
                databases = _parse_databases(value, source, lines)
            elif key == "server_settings":
                values[key] = _parse_settings(value, where)
            else:
                values[key] = _coerce(key, value, where)

    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name in _ENV_OTHER:
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key not in _SCALAR_KEYS:
            known = [env_name(k) for k in _SCALAR_KEYS] + sorted(_ENV_OTHER)
            raise ConfigError(
                f"unknown environment variable {name}{_did_you_mean(name, known)}",
                hint=f"provision reads: {', '.join(known)}",
            )
        values[key] = _coerce(key, value, f"environment variable {name}")

    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key == "server_settings":
            values[key] = _parse_settings(value, "--set")
        else:
            values[key] = _coerce(key, value, "--" + key.replace("_", "-"))

    if "volume" not in values and values.get("container", DEFAULT_CONTAINER) != DEFAULT_CONTAINER:
        # Another app's container must not share ChatBI's data volume by accident.
        values["volume"] = f"{values['container']}-pgdata"
    if values.get("data_dir"):
        if values.get("volume") and values.get("volume") != DEFAULT_VOLUME:
            raise ConfigError(
                f"both `volume:` ({values['volume']}) and `data_dir:` are set ({source}); the data lives in one place",
                hint="keep `data_dir:` to bind-mount a host directory, or `volume:` for a Docker volume",
            )
        values["volume"] = None
        values["data_dir"] = str((base_dir / values["data_dir"]).resolve())
    if "host" not in values and values.get("target") == "docker" and "bind" in values:
        values["host"] = connect_host(values["bind"])

    if not databases:
        raise ConfigError(f"no databases configured in {source}", hint="add at least one entry under `databases:`")
    return Config(databases=databases, base_dir=base_dir, source=source, **values)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> float | None:
    """Seconds from 90, "90s", "30m", "2h" or "1d"; None for anything else (or not above zero)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.fullmatch(str(value))
        if match is None:
            return None
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]
    return seconds if seconds > 0 else None


def is_local_host(host: str) -> bool:
    if host == "localhost" or host.startswith("/"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_sql_files(config: Config, db: DatabaseConfig, seed: bool = False) -> list[Path]:
    """Expand a database's SQL sources (or, with `seed`, its seed's SQL files) into files, in natural order.

    Every file must exist, be non-empty and be text; otherwise ConfigError, before anything is touched.
    """
    files: list[Path] = []
    key = "seed.sql" if seed else "sql"
    entries = (db.seed.sql if db.seed else ()) if seed else db.sql
    for entry in entries:
        where = f"databases.{db.name}.{key} in {config.source}"
        if entry.startswith(BUILTIN_PREFIX):
            base = builtin_sql_dir()
            pattern = entry[len(BUILTIN_PREFIX) :]
        else:
            base = config.base_dir
            pattern = os.path.expanduser(entry)
        full = Path(pattern) if os.path.isabs(pattern) else base / pattern
        if glob.has_magic(pattern):
            escaped = pattern if os.path.isabs(pattern) else os.path.join(glob.escape(str(base)), pattern)
            matches = sorted((Path(p) for p in glob.glob(escaped)), key=natural_key)
            matches = [m for m in matches if m.is_file()]
            if not matches:
                raise ConfigError(f"no SQL files match {entry!r} ({where})", hint=f"looked for {full}")
            files.extend(matches)
        elif full.is_dir():
            matches = sorted(
                (p for p in full.iterdir() if p.name.endswith(SOURCE_SUFFIXES) and p.is_file()), key=natural_key
            )
            if not matches:
                raise ConfigError(f"no {', '.join(SOURCE_SUFFIXES)} files in directory {full} ({where})")
            files.extend(matches)
        elif full.is_file():
            files.append(full)
        else:
            raise ConfigError(
                f"SQL file not found: {full} ({where})",
                hint="fix the path; relative paths are resolved from the config file's directory",
            )
    for f in files:
        _check_sql_file(f, where=f"databases.{db.name}.{key}")
    return files


def natural_key(path: Path) -> list[Any]:
    """Sort key that puts 2_x.sql before 10_x.sql."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", path.name)]


# What a source directory contributes: SQL, compressed SQL and pg_dump custom-format files.
SOURCE_SUFFIXES = (".sql", ".sql.gz", ".sql.xz", ".dump")


def _check_sql_file(path: Path, where: str) -> None:
    """A source must be non-empty: UTF-8 SQL text (plain, gzip or xz), or a pg_dump custom-format file."""
    from .postgres.sqlstream import ZSTD_MAGIC, source_kind

    try:
        with path.open("rb") as fh:
            head = fh.read(65536)
    except OSError as exc:
        raise ConfigError(f"cannot read SQL file {path} ({where}): {exc.strerror}") from exc
    kind = source_kind(head)
    if kind == "dump":
        return
    if head.startswith(ZSTD_MAGIC):
        raise ConfigError(
            f"SQL file is zstd-compressed, which provision does not read: {path} ({where})",
            hint="decompress it (zstd -d), or recompress it with gzip or xz",
        )
    if kind in ("gzip", "xz"):
        import gzip
        import lzma

        try:
            opener = gzip.open if kind == "gzip" else lzma.open
            with opener(path, "rb") as unpacked:
                head = unpacked.read(65536)
        except (OSError, EOFError, lzma.LZMAError) as exc:
            raise ConfigError(f"cannot decompress SQL file {path} ({where}): {exc}") from exc
    if not head.strip():
        raise ConfigError(
            f"SQL file is empty: {path} ({where})",
            hint="an empty source is almost always a mistake; remove it from the list or add its SQL",
        )
    if b"\x00" in head:
        raise ConfigError(
            f"SQL file looks binary (contains NUL bytes): {path} ({where})",
            hint="sources must be SQL text (plain, .gz or .xz) or pg_dump custom-format files",
        )
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the read limit is fine; anything else is not UTF-8.
        if not (len(head) == 65536 and exc.reason == "unexpected end of data"):
            raise ConfigError(
                f"SQL file is not UTF-8 text (bad byte at offset {exc.start}): {path} ({where})",
                hint="save the file as UTF-8",
            ) from exc


# ---------------------------------------------------------------- YAML reading


def _read_yaml(path: Path, env: Mapping[str, str]) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    import yaml  # only when there is a file: the built-in defaults need no YAML parser

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            f"invalid YAML in {path}{at}: {problem}",
            hint="check indentation and quoting; values with ':' or '#' need quotes",
        ) from exc
    if node is None:
        return {}, {}
    lines: dict[tuple[str, ...], int] = {}
    data = _node_to_python(node, (), lines, env, path)
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must be a mapping of keys (like `port: 5432`), not a {type(data).__name__}"
        )
    return data, lines


def _node_to_python(
    node: yaml.Node, path: tuple[str, ...], lines: dict[tuple[str, ...], int], env: Mapping[str, str], file: Path
) -> Any:
    import yaml

    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(yaml.SafeLoader(" ").construct_object(key_node))
            if key in out:
                raise ConfigError(f"duplicate key {key!r} in {file} at line {key_node.start_mark.line + 1}")
            out[key] = _node_to_python(value_node, (*path, key), lines, env, file)
            lines[(*path, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_node_to_python(item, (*path, str(i)), lines, env, file) for i, item in enumerate(node.value)]
    value = yaml.SafeLoader(" ").construct_object(node)
    if isinstance(value, str):
        value = _interpolate(value, env, f"{'.'.join(path)} in {file} at line {node.start_mark.line + 1}")
    return value


def _interpolate(text: str, env: Mapping[str, str], where: str) -> str:
    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in env and (env[name] != "" or default is None):
            return env[name]
        if default is not None:
            return default
        raise ConfigError(
            f"environment variable {name} is not set ({where})",
            hint=f"${{{name}}} is filled in by provision when it reads this file, from its own environment: export "
            f"{name}, or write ${{{name}:-default}}. For a value the app's command should get when it runs "
            f"(such as the private copy's database), use `env:` under migrations/seed with a placeholder "
            f"({', '.join('{' + p + '}' for p in COPY_PLACEHOLDERS)}), or write $${{{name}}} so the command's "
            "own shell sees ${" + name + "}",
        )

    return _INTERPOLATION.sub(sub, text)


def _where(source: str, lines: Mapping[tuple[str, ...], int], path: tuple[str, ...]) -> str:
    line = lines.get(path)
    dotted = ".".join(path)
    return f"{source}, line {line} ({dotted})" if line else f"{source} ({dotted})"


def _did_you_mean(word: str, choices: Any) -> str:
    import difflib  # only on this error path

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _coerce(key: str, value: Any, where: str) -> Any:
    kind = _SCALAR_KEYS[key]
    text = value if isinstance(value, str) else None

    def bad(expected: str) -> ConfigError:
        shown = "<hidden>" if key == "password" else repr(value)
        return ConfigError(
            f"{key} must be {expected}, got {shown} ({where})",
            hint=f"fix {key} there; `provision --help` and the README's configuration table list every key",
        )

    if kind == "bool":
        if isinstance(value, bool):
            return value
        if text is not None and text.lower() in ("1", "true", "yes", "on"):
            return True
        if text is not None and text.lower() in ("0", "false", "no", "off"):
            return False
        raise bad("true or false")
    if kind in ("port", "positive_int", "non_negative_int"):
        if isinstance(value, bool):
            raise bad("a whole number")
        try:
            number = int(value) if not isinstance(value, float) or value.is_integer() else None
        except (TypeError, ValueError):
            number = None
        if number is None:
            raise bad("a whole number")
        if kind == "port" and not 0 <= number <= 65535:
            raise bad("a port number from 1 to 65535 (or 0 to let Docker choose)")
        if kind == "positive_int" and number < 1:
            raise bad("a whole number of at least 1")
        if kind == "non_negative_int" and number < 0:
            raise bad("a whole number of at least 0")
        return number
    if kind == "duration":
        seconds = parse_duration(value)
        if seconds is None:
            raise bad("a duration such as 90s, 30m, 2h or 1d (or a number of seconds)")
        return seconds
    if kind == "positive_float":
        try:
            number_f = float(value) if not isinstance(value, bool) else -1.0
        except (TypeError, ValueError):
            number_f = -1.0
        if not number_f > 0:
            raise bad("a positive number of seconds")
        return number_f
    if key == "password" and not isinstance(value, str):
        raise ConfigError(
            f"password must be a string, got <hidden> ({where})",
            hint='quote it in YAML (password: "0123"): unquoted digits are read as a number and change',
        )
    if not isinstance(value, str) and not (kind in ("optional_name", "optional_path") and value is None):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and kind in ("str", "identifier"):
            value = str(value)
        else:
            raise bad("a string")
    if kind == "target":
        if value not in TARGET_KINDS:
            raise bad(" or ".join(repr(k) for k in TARGET_KINDS))
    elif kind == "cleanup":
        if value not in ("background", "sync"):
            raise bad("'background' or 'sync'")
    elif kind == "name":
        if not _CONTAINER_NAME.fullmatch(value):
            raise bad("a container name (letters, digits, '_', '.', '-')")
    elif kind == "optional_host":
        if value in (None, ""):
            return None
        if any(c.isspace() for c in value) or "/" in value:
            raise bad("a host name or address (no scheme, port or path)")
    elif kind == "optional_path":
        if value in (None, ""):
            return None
        if "\n" in value or ":" in value:
            raise bad("a directory path (no ':' or newlines: Docker reads ':' as a mount option)")
    elif kind == "optional_name":
        if value in (None, ""):
            return None
        if not _CONTAINER_NAME.fullmatch(value):
            raise bad("a volume name (letters, digits, '_', '.', '-'), or null for none")
    elif kind == "ip":
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise bad("an IP address such as 127.0.0.1") from None
    elif kind == "identifier":
        if not value or len(value.encode()) > MAX_IDENTIFIER_BYTES or "\x00" in value:
            raise bad("a role name of 1 to 63 bytes")
    elif kind == "str" and not value:
        raise bad("a non-empty string")
    return value


def _parse_settings(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise ConfigError(f"server_settings must be a mapping like `fsync: off` ({where})")
    out = []
    for name, setting in value.items():
        if not isinstance(name, str) or not _SETTING_NAME.fullmatch(name):
            raise ConfigError(f"invalid server setting name {name!r} ({where})")
        if isinstance(setting, bool):
            setting = "on" if setting else "off"
        if not isinstance(setting, (str, int, float)) or "\n" in str(setting):
            raise ConfigError(f"server setting {name} must be a single value ({where})")
        out.append((name, str(setting)))
    return tuple(out)


def _parse_databases(value: Any, source: str, lines: Mapping[tuple[str, ...], int]) -> tuple[DatabaseConfig, ...]:
    where = _where(source, lines, ("databases",))
    if not isinstance(value, Mapping):
        raise ConfigError(f"databases must be a mapping of database name to settings ({where})")
    out = []
    for name, spec in value.items():
        dwhere = _where(source, lines, ("databases", str(name)))
        validate_database_name(name, dwhere)
        spec = {} if spec is None else spec
        if not isinstance(spec, Mapping):
            raise ConfigError(f"databases.{name} must be a mapping of settings ({dwhere})")
        kwargs: dict[str, Any] = {"name": name}
        for key, item in spec.items():
            kwhere = _where(source, lines, ("databases", name, key))
            if key not in DATABASE_KEYS:
                raise ConfigError(
                    f"unknown key {key!r} in {kwhere}{_did_you_mean(key, DATABASE_KEYS)}",
                    hint=f"valid keys for a database: {', '.join(DATABASE_KEYS)}",
                )
            if key in ("sql", "tables"):
                items = [item] if isinstance(item, str) else item
                if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
                    raise ConfigError(f"{key} must be a string or a list of strings ({kwhere})")
                kwargs[key] = tuple(items)
            elif key in ("single_transaction", "demo"):
                if not isinstance(item, bool):
                    raise ConfigError(f"{key} must be true or false, got {item!r} ({kwhere})")
                kwargs[key] = item
            elif key == "alembic_revision":
                if item is not None and (not isinstance(item, (str, int)) or len(str(item)) > 32):
                    raise ConfigError(f"alembic_revision must be a revision id of at most 32 characters ({kwhere})")
                kwargs[key] = None if item is None else str(item)
            elif key == "variables":
                if not isinstance(item, Mapping):
                    raise ConfigError(f"variables must be a mapping of psql variable to value ({kwhere})")
                pairs = []
                for var, val in item.items():
                    if not isinstance(var, str) or not _VARIABLE_NAME.fullmatch(var):
                        raise ConfigError(f"invalid psql variable name {var!r} ({kwhere})")
                    if not isinstance(val, (str, int, float, bool)) or "\n" in str(val):
                        raise ConfigError(f"psql variable {var} must be a single-line value ({kwhere})")
                    pairs.append((var, str(val)))
                kwargs[key] = tuple(pairs)
            elif key == "extensions":
                items = [item] if isinstance(item, str) else item
                if not isinstance(items, list) or not all(
                    isinstance(i, str) and _EXTENSION_NAME.fullmatch(i) and len(i) <= MAX_IDENTIFIER_BYTES
                    for i in items
                ):
                    raise ConfigError(
                        f"extensions must be a list of extension names ({kwhere})",
                        hint="e.g. `extensions: [vector, postgis]` (names as in pg_available_extensions)",
                    )
                kwargs[key] = tuple(dict.fromkeys(items))
            elif key == "migrations":
                kwargs[key] = _parse_migrations(item, name, source, lines)
            elif key == "seed":
                kwargs[key] = _parse_seed(item, name, source, lines)
        if not kwargs.get("sql") and not kwargs.get("migrations"):
            raise ConfigError(
                f"databases.{name} has neither `sql:` sources nor `migrations:` ({dwhere})",
                hint="list its SQL files, globs or directories, or point `migrations:` at the app's migrations",
            )
        out.append(DatabaseConfig(**kwargs))
    return tuple(out)


def split_command(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """A command from the config: a string (split like a shell would, without running one) or a list."""
    return tuple(shlex.split(value) if isinstance(value, str) else value)


def _parse_env(value: Any, where: str, section: str) -> tuple[tuple[str, str], ...]:
    """`env:` under migrations or seed: variable name -> value, whose {placeholders} name the private copy."""
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{section}.env must be a mapping of environment variable to value ({where})",
            hint="e.g. `env: {POSTGRES_DB: '{database}', POSTGRES_PORT: '{port}'}`",
        )
    pairs = []
    for var, val in value.items():
        if not isinstance(var, str) or not _VARIABLE_NAME.fullmatch(var):
            raise ConfigError(f"{section}.env: {var!r} is not an environment variable name ({where})")
        if isinstance(val, bool) or not isinstance(val, (str, int, float)):
            raise ConfigError(f"{section}.env.{var} must be a string or a number ({where})")
        text = str(val)
        for match in _PLACEHOLDER.finditer(text):
            if match.group(1) is not None and match.group(1) not in COPY_PLACEHOLDERS:
                raise ConfigError(
                    f"{section}.env.{var}: unknown placeholder {match.group(0)} ({where})",
                    hint=f"placeholders: {', '.join('{' + p + '}' for p in COPY_PLACEHOLDERS)}; write {{{{ and }}}} "
                    "for a literal brace",
                )
        pairs.append((var, text))
    return tuple(pairs)


def fill_placeholders(template: str, values: Mapping[str, str]) -> str:
    """An `env:` value with its {placeholders} replaced by the private copy's `values`."""

    def sub(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        return values[match.group(1)]

    return _PLACEHOLDER.sub(sub, template)


def _parse_command_key(key: str, item: Any, kwhere: str, section: str, example: str) -> tuple[str, Any]:
    """The keys a migrations or seed command shares: command, cwd, url_env, env, inputs, timeout."""
    if key in ("cwd", "url_env"):
        if not isinstance(item, str) or not item:
            raise ConfigError(f"{section}.{key} must be a non-empty string ({kwhere})")
        if key == "url_env" and not _VARIABLE_NAME.fullmatch(item):
            raise ConfigError(f"{section}.url_env must be an environment variable name, got {item!r} ({kwhere})")
        return key, item
    if key == "command":
        ok = isinstance(item, str) or (isinstance(item, list) and all(isinstance(i, str) for i in item))
        try:
            command = split_command(item) if ok else ()
        except ValueError as exc:
            raise ConfigError(f"{section}.command cannot be split into arguments: {exc} ({kwhere})") from exc
        if not command:
            raise ConfigError(
                f"{section}.command must be a command line or a list of arguments ({kwhere})", hint=f"e.g. `{example}`"
            )
        return key, command
    if key == "env":
        return key, _parse_env(item, kwhere, section)
    if key in ("inputs", "sql"):
        items = [item] if isinstance(item, str) else item
        if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
            raise ConfigError(f"{section}.{key} must be a path or a list of paths ({kwhere})")
        return key, tuple(items)
    if key == "timeout":
        if isinstance(item, bool) or not isinstance(item, (int, float)) or item <= 0:
            raise ConfigError(f"{section}.timeout must be a positive number of seconds ({kwhere})")
        return key, float(item)
    raise AssertionError(key)


def _parse_migrations(value: Any, database: str, source: str, lines: Mapping[tuple[str, ...], int]) -> MigrationsConfig:
    where = _where(source, lines, ("databases", database, "migrations"))
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"databases.{database}.migrations must be a mapping ({where})",
            hint="for Alembic: `migrations: {alembic: alembic.ini}`; for another tool: `migrations: {command: ..., "
            "inputs: [...]}`",
        )
    out: dict[str, Any] = {}
    for key, item in value.items():
        kwhere = _where(source, lines, ("databases", database, "migrations", key))
        if key not in MIGRATIONS_KEYS:
            raise ConfigError(
                f"unknown key {key!r} in {kwhere}{_did_you_mean(key, MIGRATIONS_KEYS)}",
                hint=f"valid keys under migrations: {', '.join(MIGRATIONS_KEYS)}",
            )
        if key == "alembic":
            if not isinstance(item, str) or not item:
                raise ConfigError(f"migrations.{key} must be a non-empty string ({kwhere})")
            out[key] = item
        elif key == "revision":
            if not isinstance(item, (str, int)) or isinstance(item, bool) or not str(item) or len(str(item)) > 32:
                raise ConfigError(f"migrations.revision must be a revision id or `head` ({kwhere})")
            out[key] = str(item)
        else:
            name, parsed = _parse_command_key(
                key, item, kwhere, "migrations", "uv run alembic -c alembic.ini upgrade {revision}"
            )
            out[name] = parsed
    if "alembic" not in out and "command" not in out:
        raise ConfigError(
            f"databases.{database}.migrations needs `alembic:` (the app's alembic.ini) or `command:` ({where})",
            hint="e.g. `migrations: {alembic: alembic.ini}`",
        )
    if "revision" in out and "alembic" not in out:
        raise ConfigError(f"migrations.revision needs `alembic:`: only Alembic revisions are known ({where})")
    return MigrationsConfig(**out)


def _parse_seed(value: Any, database: str, source: str, lines: Mapping[tuple[str, ...], int]) -> SeedConfig:
    where = _where(source, lines, ("databases", database, "seed"))
    if isinstance(value, (str, list)):
        value = {"sql": value}  # `seed: seeds/` is short for `seed: {sql: seeds/}`
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"databases.{database}.seed must be a mapping ({where})",
            hint="e.g. `seed: {sql: seeds/}` or `seed: {command: python app/initial_data.py}`",
        )
    out: dict[str, Any] = {}
    for key, item in value.items():
        kwhere = _where(source, lines, ("databases", database, "seed", key))
        if key not in SEED_KEYS:
            raise ConfigError(
                f"unknown key {key!r} in {kwhere}{_did_you_mean(key, SEED_KEYS)}",
                hint=f"valid keys under seed: {', '.join(SEED_KEYS)}",
            )
        name, parsed = _parse_command_key(key, item, kwhere, "seed", "python app/initial_data.py")
        out[name] = parsed
    if not out.get("sql") and not out.get("command"):
        raise ConfigError(
            f"databases.{database}.seed needs `sql:` (files psql runs) or `command:` (a program) ({where})",
            hint="e.g. `seed: {command: python app/initial_data.py, inputs: [app/initial_data.py]}`",
        )
    return SeedConfig(**out)
