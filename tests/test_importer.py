"""`gapeval import`: outputs in the release's layout become a judged, scored, resumable run directory."""

import json

from PIL import Image
from test_public import COUNTING, GREEN, RED, colour_image, prompt, write_item

from gapeval.cli import main
from gapeval.importer import import_outputs
from gapeval.judges.base import Verdict
from gapeval.rundir import load_records


class RedJudge:
    """Stands in for the VLM judge: an image is right when its top-left pixel is red."""

    id = "red-v1"

    def judge(self, item, answer):
        return Verdict(answer.getpixel((0, 0)) == RED, self.id, "top-left pixel")


def write_outputs(item_dir, text=None, images=(), raw_text=None):
    """One model's folder inside data_<id>/: text.json and image files, as the release's scripts write them."""
    folder = item_dir / "mymodel"
    folder.mkdir()
    if text is not None or raw_text is not None:
        (folder / "text.json").write_text(raw_text or json.dumps({"output_text": text}))
    for name, image in images:
        image.save(folder / name)
    return folder


def release_tree(root):
    """Five items: three answered, one without outputs, one with unreadable outputs."""
    rule = write_item(
        root, 1, prompt("rule_based", reference="broken into pieces"), {"image/q.png": colour_image(GREEN)}
    )
    write_outputs(rule, "It is broken into pieces.", [("0.png", colour_image(RED))])
    counting = write_item(
        root, 2, prompt("counting", reference=COUNTING), {"image/q.png": colour_image(GREEN)}
    )
    write_outputs(
        counting, "1 apple and 3 oranges", [("b.jpg", colour_image(GREEN)), ("a.png", colour_image(RED))]
    )
    hop = write_item(root, 3, prompt("Multi Hop", reference="Ada Lovelace"))
    write_outputs(hop, "Charles Babbage", [("out.png", colour_image(GREEN))])
    write_item(root, 4, prompt("Multi Hop", reference="Ada Lovelace"))  # the model produced nothing here
    broken = write_item(root, 5, prompt("Multi Hop", reference="Ada Lovelace"))
    (write_outputs(broken, raw_text="{oops") / "x.png").write_bytes(b"not a png")
    (root / "data_5" / "other-model").mkdir()
    return root


def test_import_judges_scores_and_records_missing_outputs_per_item(tmp_path):
    root = release_tree(tmp_path / "GapEval")
    out = import_outputs(
        root, "mymodel", tmp_path / "run", judge_overrides={"gen": RedJudge()}, progress=False, bootstrap=5
    )
    records = {r["id"]: r for r in load_records(out)}
    assert list(records) == ["1", "2", "3", "4", "5"]
    verdicts = {i: (r["und"]["correct"], r["gen"]["correct"]) for i, r in records.items()}
    assert verdicts == {
        "1": (True, True),
        "2": (True, True),
        "3": (False, False),
        "4": (None, None),
        "5": (None, None),
    }
    assert records["2"]["und"]["judge"] == "text-rule-v1"  # the counting reference's named counts
    assert records["1"]["und"]["output"] == "It is broken into pieces."
    assert "text.json does not exist" in records["4"]["und"]["error"]
    assert "FileNotFoundError: no image file" in records["4"]["gen"]["error"]
    assert (
        "not valid JSON" in records["5"]["und"]["error"]
        and "cannot read image" in records["5"]["gen"]["error"]
    )
    with Image.open(out / records["2"]["gen"]["image"]) as image:  # the first image by name, copied as PNG
        assert image.getpixel((0, 0)) == RED
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"] == {
        "name": "import:mymodel",
        "config": {"layout": "gapeval", "model_dir": "mymodel"},
    }
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["n"] == 3 and summary["overall"]["n_error"] == 2
    assert (out / "report.md").exists()

    # the missing outputs arrive: importing again retries exactly the items with errors
    write_outputs(root / "data_4", "Ada Lovelace", [("0.png", colour_image(RED))])
    before = (out / "results.jsonl").read_text().splitlines()
    import_outputs(root, "mymodel", out, judge_overrides={"gen": RedJudge()}, progress=False, bootstrap=5)
    after = (out / "results.jsonl").read_text().splitlines()
    assert after[:3] == before[:3] and after[4] == before[4]
    assert json.loads(after[3])["und"]["correct"] is True and json.loads(after[3])["gen"]["correct"] is True


def test_import_command(tmp_path, capsys):
    root = release_tree(tmp_path / "GapEval")
    argv = ["import", "--layout", "gapeval", str(root), "--out", str(tmp_path / "run"), "--no-progress"]
    assert main([*argv, "--model-dir", "mymodel", "--bootstrap", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # without a VLM judge no image is judged: nothing scores, and the headline says why
    assert lines == [
        "und acc — · gen acc — · Gap Score — · κ — (0 items scored, 5 with errors)",
        f"report: {tmp_path / 'run' / 'report.md'}",
    ]
    assert main([*argv, "--model-dir", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "no data_<id>/nosuch/ output folders" in err and "data_1 has ['mymodel']" in err
