"""``OUT/report.md``: the findings first, then every section's tables, figures, paragraphs, the commands behind
its numbers and links to its records. Written from the sections' ``done.json`` alone, so it can be rebuilt."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments.paper_study.config import StudyConfig
from experiments.paper_study.records import Section

REPORT = "report.md"


def section_markdown(number: int, section: Section) -> list[str]:
    lines = [f"## {number}. {section.title}", ""]
    for note in section.skipped:
        lines += [f"> Not run here: {note}", ""]
    for table in section.tables:
        lines += [f"**{table['caption']}**", "", table["markdown"], ""]
    for figure in section.figures:
        lines += [f"![{figure['caption']}]({figure['path']})", "", f"*{figure['caption']}*", ""]
    lines += [*(p + "\n" for p in section.paragraphs)]
    if section.records:
        lines += ["Records: " + ", ".join(f"[`{r}`]({r})" for r in section.records), ""]
    if section.commands:
        lines += [
            "Each number above, on its own (run from this folder):",
            "",
            "```bash",
            *section.commands,
            "```",
            "",
        ]
    by = f"Run by `{section.command}` in" if section.command else "Section time:"
    lines += [f"*{by} {section.seconds:.0f} s.*", ""]
    return lines


def write_report(
    out: Path,
    config: StudyConfig,
    commands: Sequence[str],
    sections: Sequence[Section],
    runtime: dict[str, Any],
) -> Path:
    """``commands``: every invocation in this folder, the last one this; each section names the one that ran it."""
    load = "/".join(f"{x:.1f}" for x in runtime["load_before"])
    lines = [
        "# GapEval paper study",
        "",
        f"Profile `{config.profile}`, seed {config.seed}, models {', '.join(f'`{m}`' for m in config.models)}, "
        f"{config.threads} torch thread(s); the resolved configuration and every command line that ran here are "
        f"in [`study.json`](study.json) (this report: `{commands[-1]}`). Each section names the command that "
        "produced it. Greedy decoding and seeded resampling: the same command and seed give the same numbers.",
        "",
        f"Runtime of this invocation: {runtime['seconds']:.0f} s on {runtime['cpus']} CPUs (load average "
        f"{load} at the start; 1/5/15 min). Sections finished by an earlier invocation were read back, not rerun; "
        "per section, the time of the invocation that finished it: "
        + ", ".join(f"{s.name} {s.seconds:.0f} s" for s in sections)
        + f" (sum {sum(s.seconds for s in sections):.0f} s).",
        "",
        "## Findings",
        "",
    ]
    lines += findings_list([finding for section in sections for finding in section.findings])
    lines.append("")
    for number, section in enumerate(sections, start=1):
        lines += section_markdown(number, section)
    path = out / REPORT
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def findings_list(findings: list[str]) -> list[str]:
    """A report's findings as markdown list lines ("(none)" when there are none)."""
    return [f"- {finding}" for finding in findings] or ["- (none)"]
