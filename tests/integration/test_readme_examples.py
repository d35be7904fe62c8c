"""The README's library example runs as written, against a real server."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import REPO, Project

pytestmark = pytest.mark.integration


def library_example() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Library") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the Library section has no python example"
    return match.group(1)


def test_the_library_example_runs(project: Project) -> None:
    code = library_example()
    assert 'load_config("provision.yaml")' in code, "the example no longer loads provision.yaml"
    check = (
        "\nassert {d.name for d in result.databases} == {'chatbi', 'chatbi_demo'}, result"
        "\ncur = conn.cursor(); cur.execute('SELECT count(*) FROM app_users'); print('rows', cur.fetchone()[0])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code + check],
        cwd=project.dir,  # where the project's provision.yaml is
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "rows 0" in result.stdout
