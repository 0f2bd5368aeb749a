"""`gapeval import --verdicts release`: the release's own new_res.json verdicts, on a tree built here in its layout."""

import json

import pytest
from test_public import COUNTING, GREEN, RED, colour_image, prompt, write_item

import gapeval.runner
from gapeval.cli import main
from gapeval.importer import import_models, import_outputs, joint_rows
from gapeval.release_verdicts import (
    JUDGE_ID,
    VerdictProblem,
    entry_verdict,
    image_verdict,
    parse_verdict,
    text_verdict,
    verdict_counts,
)
from gapeval.rundir import load_records, read_summary
from gapeval.score import gap_scores_reference_batched

# --- the verdict spellings, one entry at a time -------------------------------------------------------------

CORRECT = [True, 1, 1.0, "1", "true", " TRUE ", "yes", "Yes\n"]
WRONG = [False, 0, 0.0, "0", "false", "no", " No "]
MALFORMED = ["maybe", "correct", "", 2, -1, 0.5, [], {}, [1]]


@pytest.mark.parametrize("value", CORRECT)
def test_correct_spellings(value):
    assert parse_verdict(value) is True


@pytest.mark.parametrize("value", WRONG)
def test_wrong_spellings(value):
    assert parse_verdict(value) is False


@pytest.mark.parametrize("value", MALFORMED)
def test_any_other_value_is_an_error_not_a_wrong_answer(value):
    with pytest.raises(VerdictProblem) as err:
        parse_verdict(value, "text_eval.parsed.score")
    assert err.value.kind == "malformed" and err.value.field == "text_eval.parsed.score"


def ok(parsed):
    return {"status": "ok", "raw_response": json.dumps(parsed), "parsed": parsed}


@pytest.mark.parametrize(
    ("parsed", "expected"),
    [
        ({"reason": "fine", "score": True}, True),
        ({"judge_result": 1}, True),
        ({"judeg_result": "yes"}, True),  # the misspelling the release's script tolerates
        ({"score": None, "judge_result": "no"}, False),  # a null score falls through to judge_result
        ({"score": 0, "judge_result": 1}, False),  # score comes first
        ({"judge_result": None, "judeg_result": "1"}, True),
    ],
)
def test_verdict_keys_in_order(parsed, expected):
    assert entry_verdict(ok(parsed), "text_eval")[0] is expected


@pytest.mark.parametrize(
    ("entry", "kind", "field"),
    [
        ({"status": "error", "error": "HTTP 429"}, "error", "text_eval.status"),
        ({"status": "skipped", "reason": "text.json not found"}, "skipped", "text_eval.status"),
        ({"status": "pending", "parsed": {"score": 1}}, "malformed", "text_eval.status"),
        ({"status": "ok", "raw_response": "I think so", "parsed": None}, "unparsed", "text_eval.parsed"),
        ({"status": "ok", "raw_response": "I think so"}, "unparsed", "text_eval.parsed"),
        ({"status": "ok", "parsed": [1]}, "malformed", "text_eval.parsed"),
        ({"status": "ok", "parsed": {"reason": "no verdict key"}}, "malformed", "text_eval.parsed"),
        ({"status": "ok", "parsed": {"judge_result": "maybe"}}, "malformed", "text_eval.parsed.judge_result"),
        ("ok", "malformed", "text_eval"),
    ],
)
def test_every_status_without_a_verdict_is_an_error_of_its_kind(entry, kind, field):
    with pytest.raises(VerdictProblem) as err:
        text_verdict({"text_eval": entry})
    assert (err.value.kind, err.value.field) == (kind, field)


def image_entry(name, value, **extra):
    return {
        "status": "ok",
        "generated_image": f"/release/data_2/m/{name}",
        "parsed": {"judge_result": value},
    } | extra


def test_image_choice_first_any_all():
    data = {"image_eval": [image_entry("a.png", 0), image_entry("b.jpg", "TRUE")]}
    assert image_verdict(data, "a.png", "first")[0] is False
    assert image_verdict(data, "b.jpg", "first")[0] is True  # the entry of the image the run shows
    assert image_verdict(data, "a.png", "any") == (True, "a.png: wrong; b.jpg: right")
    assert image_verdict(data, "a.png", "all")[0] is False
    with pytest.raises(VerdictProblem, match=r"no verdict for c.png \(it judged a.png, b.jpg\)") as err:
        image_verdict(data, "c.png", "first")
    assert err.value.kind == "missing"
    # entries that do not name their image: the first is the first image's (the release writes them sorted)
    assert image_verdict({"image_eval": [{"status": "ok", "parsed": {"score": 1}}]}, "x.png", "first")[0]
    # any/all need every image's verdict: one error is an error, never a guess
    broken = {"image_eval": [image_entry("a.png", 1), {"status": "error", "generated_image": "b.jpg"}]}
    with pytest.raises(VerdictProblem, match="judge failed") as err:
        image_verdict(broken, "a.png", "any")
    assert err.value.field == "image_eval[1].status"
    assert image_verdict(broken, "a.png", "first")[0] is True
    for data, kind in (({}, "missing"), ({"image_eval": []}, "missing"), ({"image_eval": {}}, "malformed")):
        with pytest.raises(VerdictProblem) as err:
            image_verdict(data, "a.png", "first")
        assert err.value.kind == kind


# --- a release tree with judged outputs ----------------------------------------------------------------------


def new_res(text, images):
    """A new_res.json as the release's judging script writes it: ``text`` and each image's value go into
    ``parsed["judge_result"]`` unless given as a whole entry (a dict with a status)."""
    text_eval = (
        text if isinstance(text, dict) and "status" in text else ok({"reason": "r", "judge_result": text})
    )
    image_eval = [
        value if isinstance(value, dict) and "status" in value else image_entry(name, value)
        for name, value in images
    ]
    return {"category": "x", "model_dir": "m", "text_eval": text_eval, "image_eval": image_eval}


def write_judged(item_dir, model, text, images, result):
    """One model's folder: text.json (unless ``text`` is None), the images, and new_res.json (a dict, raw
    text, or None for no file)."""
    folder = item_dir / model
    folder.mkdir()
    if text is not None:
        (folder / "text.json").write_text(json.dumps({"output_text": text}))
    for name, colour in images:
        colour_image(colour).save(folder / name)
    if result is not None:
        (folder / "new_res.json").write_text(result if isinstance(result, str) else json.dumps(result))
    return folder


SKIPPED = {"status": "skipped", "reason": "text.json not found"}
ERROR = {"status": "error", "error": "HTTPError: 500"}
UNPARSED = {"status": "ok", "raw_response": "Looks right to me.", "parsed": None}


def release_tree(root):
    """Nine items in four categories: model "alpha" covers every spelling and status, "beta" is clean."""
    items = [
        ("rule_based", "broken"),
        ("counting", COUNTING),
        ("Multi Hop", "Ada Lovelace"),
        ("Multi Hop", "Ada Lovelace"),
        ("physics", "it falls"),
        ("reasoning", "C"),
        ("Multi Hop", "Ada Lovelace"),
        ("counting", COUNTING),
        ("rule_based", "broken"),
    ]
    dirs = [write_item(root, n, prompt(c, reference=r)) for n, (c, r) in enumerate(items, 1)]
    alpha = [
        ("It broke.", [("0.png", RED)], new_res(True, [("0.png", 1)])),  # (T, T)
        ("1 apple", [("b.jpg", GREEN), ("a.png", RED)], new_res("yes", [("a.png", 0), ("b.jpg", "TRUE")])),
        ("Babbage", [("0.png", GREEN)], new_res("false", [("0.png", 0)])),  # (F, F)
        ("Ada", [("0.png", RED)], new_res(ERROR, [("0.png", 1)])),  # und: the release's judge failed
        ("falls", [("0.png", RED)], new_res(SKIPPED, [("0.png", {"status": "skipped", "reason": "x"})])),
        ("C", [("0.png", RED)], new_res(UNPARSED, [("0.png", "maybe")])),  # unparsed / malformed
        ("Ada", [("0.png", RED)], None),  # no new_res.json
        ("2 apples", [("0.png", RED)], "{oops"),  # unreadable
        (None, [("0.png", RED)], new_res(" 1 ", [("0.png", 1)])),  # no text.json: no answer to show
    ]
    for item_dir, (text, images, result) in zip(dirs, alpha, strict=True):
        write_judged(item_dir, "alpha", text, images, result)
    beta = [(1, 0), (0, 1), (1, 1), (0, 0), (True, False), ("no", "yes"), (1, 1), (1, 0), (0, 0)]
    for item_dir, (und, gen) in zip(dirs, beta, strict=True):
        write_judged(item_dir, "beta", "an answer", [("0.png", RED)], new_res(und, [("0.png", gen)]))
    return root


@pytest.fixture
def no_judge(monkeypatch):
    """Fail loudly if anything asks for a VLM judge's settings."""

    def refuse():
        raise AssertionError("a VLM judge was set up")

    monkeypatch.setattr(gapeval.runner, "_vlm_from_env", refuse)


def snapshot(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_release_verdicts_are_recorded_per_item_and_direction(tmp_path, no_judge):
    root = release_tree(tmp_path / "GapEval")
    out = import_outputs(root, "alpha", tmp_path / "run", verdicts="release", progress=False, bootstrap=5)
    records = {r["id"]: r for r in load_records(out)}
    verdicts = {i: (r["und"]["correct"], r["gen"]["correct"]) for i, r in records.items()}
    assert verdicts == {
        "1": (True, True),
        "2": (True, False),  # a.png is the first image by name: its verdict counts
        "3": (False, False),
        "4": (None, True),
        "5": (None, None),
        "6": (None, None),
        "7": (None, None),
        "8": (None, None),
        "9": (None, True),
    }
    assert records["1"]["und"] == {
        "output": "It broke.",
        "correct": True,
        "judge": JUDGE_ID,
        "reason": "r",
        "error": None,
    }
    assert records["1"]["gen"]["judge"] == "release:new_res.json:first"
    errors = {
        (i, d): records[i][d]["error"] for i in records for d in ("und", "gen") if records[i][d]["error"]
    }
    assert errors[("4", "und")].startswith("release error: the release's judge failed: HTTPError: 500 (file=")
    assert "item=4, field=text_eval.status" in errors[("4", "und")]
    assert (
        errors[("5", "gen")].startswith("release skipped:") and "image_eval[0].status" in errors[("5", "gen")]
    )
    assert errors[("6", "und")].startswith("release unparsed:")
    assert errors[("6", "gen")].startswith('release malformed: "maybe" is not a verdict')
    assert "field=image_eval[0].parsed.judge_result" in errors[("6", "gen")]
    assert errors[("7", "gen")].startswith("release missing: new_res.json does not exist")
    assert errors[("8", "und")].startswith("release unreadable: not readable JSON")
    assert errors[("9", "und")].startswith("model: FileNotFoundError") and "text.json" in errors[("9", "und")]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["judges"] == {"und": [JUDGE_ID], "gen": ["release:new_res.json:first"]}

    summary = read_summary(out)
    assert summary["overall"]["n"] == 3 and summary["overall"]["n_error"] == 6
    counts = {
        "und": {
            "verdicts": 3,
            "missing": 1,
            "unreadable": 1,
            "error": 1,
            "skipped": 1,
            "unparsed": 1,
            "no answer": 1,
        },
        "gen": {"verdicts": 5, "missing": 1, "unreadable": 1, "skipped": 1, "malformed": 1},
    }
    assert summary["model_notes"] == {"release_verdicts": counts}
    assert verdict_counts(records.values()) == counts
    assert "release_verdicts" in (out / "report.md").read_text()

    # importing the same folder again changes nothing (the items with errors are read again, to the same end)
    before = snapshot(out)
    import_outputs(root, "alpha", out, verdicts="release", progress=False, bootstrap=5)
    assert snapshot(out) == before

    # fixing one broken new_res.json fills exactly that item
    (root / "data_8" / "alpha" / "new_res.json").write_text(json.dumps(new_res(0, [("0.png", "1")])))
    lines = (out / "results.jsonl").read_text().splitlines()
    import_outputs(root, "alpha", out, verdicts="release", progress=False, bootstrap=5)
    after = (out / "results.jsonl").read_text().splitlines()
    assert after[:7] == lines[:7] and after[8:] == lines[8:]
    fixed = json.loads(after[7])
    assert (fixed["und"]["correct"], fixed["gen"]["correct"]) == (False, True)
    assert read_summary(out)["overall"]["n"] == 4

    with pytest.raises(ValueError, match="holds a different run"):  # another image rule is another run
        import_outputs(root, "alpha", out, verdicts="release", image_verdict="any", progress=False)


def test_import_options_are_checked(tmp_path):
    root = release_tree(tmp_path / "GapEval")
    with pytest.raises(ValueError, match="needs the release's verdicts"):
        import_outputs(root, "alpha", tmp_path / "run", image_verdict="all")
    with pytest.raises(ValueError, match="not a path"):
        import_models(root, ["../alpha"], tmp_path / "run", verdicts="release")
    with pytest.raises(ValueError, match="named twice"):
        import_models(root, ["alpha", "alpha"], tmp_path / "run", verdicts="release")
    with pytest.raises(ValueError, match="judge overrides do not apply"):
        import_outputs(root, "alpha", tmp_path / "run", verdicts="release", judge_overrides={"gen": object()})


def test_several_models_write_the_release_rows_and_a_summary(tmp_path, capsys, no_judge):
    root = release_tree(tmp_path / "GapEval")
    out = tmp_path / "runs"
    argv = ["import", "--layout", "gapeval", str(root), "--model-dir", "alpha", "--model-dir", "beta"]
    argv += [
        "--verdicts",
        "release",
        "--image-verdict",
        "any",
        "--out",
        str(out),
        "--no-progress",
        "--bootstrap",
        "5",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("alpha: und acc ") and printed[0].endswith("(3 items scored, 6 with errors)")
    assert printed[
        1
    ] == "  new_res.json verdicts: und: 3 verdicts, 1 missing, 1 unreadable, 1 error, 1 skipped, " + (
        "1 unparsed, 1 no answer · gen: 5 verdicts, 1 missing, 1 unreadable, 1 skipped, 1 malformed"
    )
    assert printed[-2:] == [f"rows: {out / 'rows.json'}", f"summary: {out / 'summary.md'}"]
    alpha = {r["id"]: r for r in load_records(out / "alpha")}
    assert alpha["2"]["gen"]["correct"] is True  # any: b.jpg was judged right

    # beta's joint outcomes by category, from its verdicts above: [p11, p10, p01, p00]
    rows = json.loads((out / "rows.json").read_text())
    assert rows["beta"] == [
        [0.0, 0.5, 0.0, 0.5],  # instruction following: items 1 (1, 0) and 9 (0, 0)
        [0.0, 0.5, 0.5, 0.0],  # numerical perception: 2 (0, 1) and 8 (1, 0)
        [2 / 3, 0.0, 0.0, 1 / 3],  # world knowledge: 3 (1, 1), 4 (0, 0), 7 (1, 1)
        [0.0, 0.5, 0.5, 0.0],  # reasoning: 5 (T, F) and 6 ("no", "yes")
    ]
    assert rows["alpha"] == [[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
    assert list(joint_rows(read_summary(out / "alpha"))) == [
        "instruction_following",
        "numerical_perception",
        "world_knowledge",
    ]

    # `gapeval score` on the rows file: the release's numbers, which the runs' own summaries agree with
    assert main(["score", str(out / "rows.json")]) == 0
    scored = json.loads((out / "rows_gapres.json").read_text())["results"]
    expected = gap_scores_reference_batched(rows)
    for name in ("alpha", "beta"):
        assert scored[name]["gaps"] == [round(g, 6) for g in expected[name].gaps]
        summary = read_summary(out / name)
        own = [summary["categories"][c]["gap_reference"] for c in joint_rows(summary)]
        assert scored[name]["gaps"] == [round(g, 6) for g in own]

    text = (out / "summary.md").read_text()
    assert (
        "## alpha" in text and "## beta" in text and "identified gap [95% CI]" in text and "McNemar p" in text
    )
    assert "- rows: instruction_following, numerical_perception, world_knowledge\n" in text

    before = snapshot(out)
    assert main(argv) == 0  # again: nothing changes
    assert snapshot(out) == before
