"""Every ```python block in README.md runs, alone, in a fresh interpreter.

Blocks written as ```py are fragments (they need a broker, a server to connect
to, or an application around them) and are not run.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def blocks() -> list[tuple[int, str]]:
    text = README.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in BLOCK.finditer(text)]


def test_readme_has_runnable_blocks() -> None:
    assert len(blocks()) >= 5


@pytest.mark.parametrize(("lineno", "code"), blocks(), ids=[f"line{n}" for n, _ in blocks()])
def test_block_runs(lineno: int, code: str, tmp_path: Path) -> None:
    script = tmp_path / f"readme_line{lineno}.py"
    script.write_text(code, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, (
        f"README.md block at line {lineno} failed:\n{result.stdout}\n{result.stderr}"
    )
