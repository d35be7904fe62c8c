"""The README is the front door: every command and every option of the real CLI appears in it."""

from __future__ import annotations

import re
from pathlib import Path

import click

from provision import cli as cli_module

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    found: list[tuple[tuple[str, ...], click.Command]] = []
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        if command.hidden:
            continue
        found.append((path, command))
        if isinstance(command, click.Group):
            found += commands(command, path)
    return found


def test_the_walk_finds_the_commands() -> None:
    names = {" ".join(path) for path, _ in commands(cli_module.cli)}
    assert {"fresh", "up", "snapshot save", "check", "doctor"} <= names


def test_every_command_appears_in_the_readme() -> None:
    missing = []
    for path, _ in commands(cli_module.cli):
        words = r"\s+".join(re.escape(w) for w in path)
        if not re.search(r"provision\s+(?:\[[^\]]*\]\s+)?(?:-c\s+\S+\s+)?" + words + r"\b", README) and not re.search(
            r"`" + words + r"[\s`]", README
        ):
            missing.append(" ".join(path))
    assert not missing, f"commands the README never shows: {missing}"


def test_every_option_appears_in_the_readme() -> None:
    missing = []
    for path, command in [((), cli_module.cli), *commands(cli_module.cli)]:
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("--") and opt not in ("--help",) and not re.search(re.escape(opt) + r"\b", README):
                    missing.append(f"{' '.join(path) or 'provision'} {opt}")
    assert not missing, f"options the README never mentions: {missing}"
