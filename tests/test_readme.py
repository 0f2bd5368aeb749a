"""The README's Python example runs as written (in a scratch folder), with the project's dependencies only."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert blocks, "the README has a Python example"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})
    und, gen, gap = (float(x) for x in capsys.readouterr().out.split())
    assert 0.3 < und <= 1 and 0.3 < gen <= 1 and 0 <= gap <= 1
    assert len((tmp_path / "runs" / "toy-small" / "results.jsonl").read_text().splitlines()) == 40
