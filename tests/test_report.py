"""Reports: the per-category table matches the records, charts are real PNGs, partial runs are labelled."""

import json

import pytest
from PIL import Image

from gapeval.report import compare, table, write_report
from gapeval.summary import summarize


def _records(outcomes):
    """outcomes: {category: [(und, gen), ...]} with True/False/None verdicts → results.jsonl records."""
    records = []
    for category, pairs in outcomes.items():
        for k, (und, gen) in enumerate(pairs):
            records.append(
                {
                    "id": f"{category}-{k}",
                    "category": category,
                    "subcategory": "",
                    "und": {"output": "x", "correct": und, "judge": "t", "reason": "", "error": None},
                    "gen": {"image": None, "correct": gen, "judge": "i", "reason": "", "error": None},
                }
            )
    return records


OUTCOMES = {
    "reasoning": [(True, True)] * 6 + [(True, False)] * 3 + [(False, False)] * 1,
    "world_knowledge": [(True, False)] * 4 + [(False, True)] * 1 + [(None, True)] * 2,
}


def _write_run(path, outcomes, model="oracle", with_summary=True):
    path.mkdir(parents=True)
    records = _records(outcomes)
    (path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    manifest = {
        "model": {"name": model, "config": {"k": 1}},
        "suite": {"id": "s", "hash": "ab" * 32, "n_items": 9},
    }
    (path / "manifest.json").write_text(json.dumps({**manifest, "seed": 0, "edit": None}))
    if with_summary:
        summary = summarize(records, bootstrap=5)
        summary["model_notes"] = {"note": "hello"}
        (path / "summary.json").write_text(json.dumps(summary))
    return path


def _row(markdown, label):
    return next(line for line in markdown.splitlines() if line.startswith(f"| {label} |"))


def test_report_table_matches_records(tmp_path):
    run = _write_run(tmp_path / "run", OUTCOMES)
    path = write_report(run)
    text = path.read_text()
    assert path == run / "report.md"
    cells = [c.strip() for c in _row(text, "reasoning").split("|")[1:-1]]
    assert cells[:8] == [
        "reasoning",
        "10",
        "0.900",
        "0.600",
        "0.600 (6)",
        "0.300 (3)",
        "0.000 (0)",
        "0.100 (1)",
    ]
    assert cells[-1] == "0"
    wk = [c.strip() for c in _row(text, "world_knowledge").split("|")[1:-1]]
    assert wk[1:4] == ["5", "0.800", "0.200"] and wk[-1] == "2"  # judge errors are left out and counted
    overall = [c.strip() for c in _row(text, "overall").split("|")[1:-1]]
    assert overall[1:4] == ["15", "0.867", "0.467"]
    gap = json.loads((run / "summary.json").read_text())["categories"]["reasoning"]["gap_reference"]
    assert cells[8].startswith(f"{gap:.3f} [")
    assert "oracle on s" in text and '"note": "hello"' in text and "partial" not in text
    with Image.open(run / "report.png") as image:
        assert image.format == "PNG" and image.width > 800


def test_partial_run_is_reported_as_partial(tmp_path):
    run = _write_run(tmp_path / "run", OUTCOMES, with_summary=False)
    text = write_report(run, bootstrap=5).read_text()
    assert "**partial**" in text and _row(text, "reasoning").split("|")[3].strip() == "0.900"
    assert not (run / "summary.json").exists()


def test_missing_values_print_as_dashes():
    summary = summarize(_records({"reasoning": [(None, True)] * 3}), bootstrap=5)
    row = [c.strip() for c in _row(table(summary), "reasoning").split("|")[1:-1]]
    assert row[1] == "0" and row[2] == "—" and row[8] == "—" and row[-1] == "3"


def test_compare_side_by_side(tmp_path):
    a = _write_run(tmp_path / "a", OUTCOMES, model="oracle")
    b = _write_run(tmp_path / "b", {"reasoning": [(True, True)] * 5 + [(False, True)] * 5}, model="toy")
    markdown = compare([a, b], png_path=tmp_path / "cmp.png")
    header = markdown.splitlines()[0]
    assert "a (oracle): und" in header and "b (toy): Gap" in header
    reasoning = [c.strip() for c in _row(markdown, "reasoning").split("|")[1:-1]]
    assert reasoning[1:3] == ["0.900", "0.600"] and reasoning[4:6] == ["0.500", "1.000"]
    wk = [c.strip() for c in _row(markdown, "world_knowledge").split("|")[1:-1]]
    assert wk[4:] == ["—", "—", "—"]  # run b has no world-knowledge items
    with Image.open(tmp_path / "cmp.png") as image:
        assert image.format == "PNG"


def test_report_of_a_missing_run_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="is .* a run directory"):
        write_report(tmp_path / "nothing")


def test_corrupt_run_files_are_errors_naming_file_and_line(tmp_path):
    run = _write_run(tmp_path / "run", OUTCOMES, with_summary=False)
    lines = (run / "results.jsonl").read_text().splitlines(keepends=True)
    (run / "results.jsonl").write_text("".join(lines[:2]) + '{"id": "x", oops\n' + "".join(lines[3:]))
    with pytest.raises(ValueError, match=r"results.jsonl, line 3: not a results record"):
        write_report(run, bootstrap=5)
    (run / "summary.json").write_text('{\n  "overall": {\n  "n": 3,,\n}')
    with pytest.raises(ValueError, match=r"summary.json, line 3: not valid JSON"):
        write_report(run)
    (run / "summary.json").write_text("[]")
    with pytest.raises(ValueError, match=r"summary.json: not a run summary"):
        write_report(run)
