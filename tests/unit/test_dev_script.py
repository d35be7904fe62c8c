"""scripts/dev on a host without apt-get (macOS, Fedora, ...): it installs nothing and names what is missing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_without_apt_get_each_missing_piece_is_named_and_nothing_installed(tmp_path: Path) -> None:
    # A PATH with the basic tools and Python, but no docker, no dockerd and no apt-get.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "id", "sed", "seq", "sleep", "touch", "cat"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    (bin_dir / "python3").symlink_to(REPO / ".venv" / "bin" / "python")
    calls = tmp_path / "calls"
    for forbidden in ("apt-get", "sudo"):  # recorded if anything tried them
        (bin_dir / forbidden).write_text(f"#!{shutil.which('bash')}\necho {forbidden} >> {calls}\nexit 1\n")
        (bin_dir / forbidden).chmod(0o755)
    (bin_dir / "apt-get").unlink()  # absent, as on such a host
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    result = subprocess.run(
        [shutil.which("bash") or "bash", str(REPO / "scripts" / "dev"), "setup"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("dev: missing: ")]
    assert lines == ["dev: missing: a Docker engine (Docker Desktop, colima, OrbStack, or your distribution's docker)"]
    assert "install the above, then run this again" in result.stderr
    assert not calls.exists(), calls.read_text()
