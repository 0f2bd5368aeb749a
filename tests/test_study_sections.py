"""Every section of `gapeval study` at a tiny size on the built-in model (conftest's ``tiny_study``): it
finishes, reports, and every command it prints is a real command line of the real parser with no absolute path
in it."""

from __future__ import annotations

import pytest
from tests_support import check_commands

from experiments.paper_study.records import finished


@pytest.mark.parametrize("name", ["gap", "edit", "bridge", "emergence", "mechanism", "sharing"])
def test_each_section_finishes_with_real_commands(tiny_study, name):
    out, _ = tiny_study
    section = finished(out / name)
    assert section is not None and section.name == name
    assert section.tables or section.paragraphs
    assert section.commands, f"{name} prints no command behind its numbers"
    check_commands(section.commands)
    for record in section.records:
        assert (out / record).exists(), record
    assert f"{section.title}" in (out / "report.md").read_text()
