"""resolve_sql_files: files, globs and directories in natural order, and every unusable source refused up front."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from provision.config import (
    BUILTIN_PREFIX,
    Config,
    DatabaseConfig,
    builtin_sql_dir,
    default_databases,
    natural_key,
    resolve_sql_files,
)
from provision.errors import ConfigError


def cfg_at(base: Path) -> Config:
    return Config(base_dir=base, source=str(base / "provision.yaml"))


def resolve(base: Path, *sql: str) -> list[Path]:
    return resolve_sql_files(cfg_at(base), DatabaseConfig(name="app", sql=sql))


def refused(base: Path, *sql: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        resolve(base, *sql)
    assert info.value.exit_code == 2
    return info.value


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    directory = tmp_path / "migrations"
    directory.mkdir()
    for name in ("10_c.sql", "2_b.sql", "1_a.sql", "README.md", "003_d.sql"):
        (directory / name).write_text(f"-- {name}\nselect 1;\n")
    (directory / "sub.sql").mkdir()  # a directory that looks like a source is skipped
    return directory


def test_single_file_relative_to_config_dir(tmp_path: Path) -> None:
    (tmp_path / "init.sql").write_text("select 1;\n")
    assert resolve(tmp_path, "init.sql") == [tmp_path / "init.sql"]


def test_absolute_path(tmp_path: Path) -> None:
    path = tmp_path / "abs.sql"
    path.write_text("select 1;\n")
    assert resolve(tmp_path / "elsewhere", str(path)) == [path]


def test_directory_in_natural_numeric_order(tmp_path: Path, migrations: Path) -> None:
    names = [p.name for p in resolve(tmp_path, "migrations")]
    assert names == ["1_a.sql", "2_b.sql", "003_d.sql", "10_c.sql"]


def test_glob_in_natural_numeric_order(tmp_path: Path, migrations: Path) -> None:
    names = [p.name for p in resolve(tmp_path, "migrations/*_*.sql")]
    assert names == ["1_a.sql", "2_b.sql", "003_d.sql", "10_c.sql"]


def test_entries_keep_their_listed_order(tmp_path: Path, migrations: Path) -> None:
    (tmp_path / "seed.sql").write_text("select 2;\n")
    files = resolve(tmp_path, "seed.sql", "migrations/1_a.sql", "migrations/10_c.sql")
    assert [p.name for p in files] == ["seed.sql", "1_a.sql", "10_c.sql"]


def test_natural_key_orders_numbers_numerically() -> None:
    names = ["10_x.sql", "2_x.sql", "1_x.sql", "b.sql", "a.sql", "v1_10.sql", "v1_9.sql"]
    ordered = sorted((Path(n) for n in names), key=natural_key)
    assert [p.name for p in ordered] == ["1_x.sql", "2_x.sql", "10_x.sql", "a.sql", "b.sql", "v1_9.sql", "v1_10.sql"]


def test_builtin_sources_exist() -> None:
    assert builtin_sql_dir().is_dir()
    cfg = Config()
    for db in default_databases():
        assert all(entry.startswith(BUILTIN_PREFIX) for entry in db.sql)
        files = resolve_sql_files(cfg, db)
        assert files and all(f.is_file() and f.stat().st_size > 0 for f in files)


def test_missing_file(tmp_path: Path) -> None:
    error = refused(tmp_path, "nope.sql")
    assert str(tmp_path / "nope.sql") in str(error)
    assert "databases.app.sql" in str(error)
    assert error.hint


def test_missing_builtin(tmp_path: Path) -> None:
    assert "not found" in str(refused(tmp_path, BUILTIN_PREFIX + "nope/nope.sql"))


def test_glob_matching_nothing(tmp_path: Path) -> None:
    assert "no SQL files match" in str(refused(tmp_path, "migrations/*.sql"))


def test_directory_without_sql_files(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    assert "no .sql, .sql.gz, .sql.xz, .dump files" in str(refused(tmp_path, "empty"))


@pytest.mark.parametrize("content", [b"", b"  \n\n\t\n"])
def test_empty_file(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "empty.sql").write_bytes(content)
    error = refused(tmp_path, "empty.sql")
    assert "empty" in str(error) and "empty.sql" in str(error)


def test_binary_file(tmp_path: Path) -> None:
    (tmp_path / "image.sql").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    assert "binary" in str(refused(tmp_path, "image.sql"))


def test_compressed_and_dump_sources_are_accepted_and_others_refused(tmp_path: Path) -> None:
    import gzip
    import lzma

    from provision.postgres.sqlstream import SourceMap, stream_files

    text = b"CREATE TABLE t (id int);\nINSERT INTO t VALUES (1);\n"
    (tmp_path / "a.sql.gz").write_bytes(gzip.compress(text))
    (tmp_path / "b.sql.xz").write_bytes(lzma.compress(b"SELECT 2;"))
    (tmp_path / "c.dump").write_bytes(b"PGDMP\x01\x0e\x00" + b"\x00" * 64)
    assert resolve(tmp_path, "a.sql.gz", "b.sql.xz", "c.dump") == [
        tmp_path / n for n in ("a.sql.gz", "b.sql.xz", "c.dump")
    ]
    source_map = SourceMap()
    streamed = b"".join(stream_files([tmp_path / "a.sql.gz", tmp_path / "b.sql.xz"], source_map))
    assert streamed == text + b"SELECT 2;\n"  # decompressed, and a missing final newline added
    assert source_map.locate(3) == (tmp_path / "b.sql.xz", 1)
    raw = hashlib.sha256((tmp_path / "a.sql.gz").read_bytes()).hexdigest()
    assert source_map.digests[tmp_path / "a.sql.gz"] == raw, "provenance hashes the file as it is on disk"

    (tmp_path / "z.sql.zst").write_bytes(b"\x28\xb5\x2f\xfd" + b"\x00" * 16)
    assert "zstd" in str(refused(tmp_path, "z.sql.zst"))
    (tmp_path / "bad.sql.gz").write_bytes(b"\x1f\x8b\x08\x00broken")
    assert "cannot decompress" in str(refused(tmp_path, "bad.sql.gz"))
    (tmp_path / "nul.sql.gz").write_bytes(gzip.compress(b"\x00\x01\x02"))
    assert "binary" in str(refused(tmp_path, "nul.sql.gz"))


def test_non_utf8_file(tmp_path: Path) -> None:
    (tmp_path / "latin1.sql").write_bytes("INSERT INTO t VALUES ('café au lait');\n".encode("latin-1"))
    error = refused(tmp_path, "latin1.sql")
    assert "not UTF-8" in str(error)
    assert "UTF-8" in error.hint


def test_empty_or_binary_file_inside_a_directory_is_refused(tmp_path: Path, migrations: Path) -> None:
    (migrations / "5_empty.sql").write_text("")
    assert "5_empty.sql" in str(refused(tmp_path, "migrations"))


def test_utf8_character_cut_at_the_read_boundary_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "big.sql"
    path.write_bytes(b"-" * 65535 + "é\nselect 1;\n".encode())  # 'é' straddles the 64 KiB boundary
    assert resolve(tmp_path, "big.sql") == [path]


def test_non_utf8_byte_near_the_end_of_a_small_file(tmp_path: Path) -> None:
    (tmp_path / "tail.sql").write_bytes("select 1;\n-- café\n".encode("latin-1"))
    refused(tmp_path, "tail.sql")


def test_config_dir_with_glob_characters(tmp_path: Path) -> None:
    base = tmp_path / "proj[1]"
    base.mkdir()
    (base / "init.sql").write_text("select 1;\n")
    assert resolve(base, "init.sql") == [base / "init.sql"]
