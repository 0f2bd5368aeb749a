"""The toolkit suite format: exact round trips, stable hashes, and errors that say where."""

import json
import os
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from gapeval.io import load_items, save_items, suite_hash
from gapeval.items import Item, ItemError


def picture(seed: int, size=(24, 16)) -> Image.Image:
    image = Image.new("RGB", size, (seed * 37 % 256, 200, 10))
    ImageDraw.Draw(image).rectangle((2, 2, 2 + seed % 10, 9), fill=(0, seed % 256, 255))
    return image


def make_items() -> list[Item]:
    return [
        Item(
            id="if-001",
            category="instruction_following",
            subcategory="recolour",
            und_prompt="What colour is the square after recolouring?",
            gen_prompt="Draw the image with the square recoloured.",
            image=picture(1),
            reference=["blue", "dark blue"],
            reference_image=picture(2),
            spec={
                "und": {"answer": "blue"},
                "gen": {"objects": [{"shape": "square", "colour": [0, 0, 255]}]},
            },
            meta={"seed": 7, "note": "ünïcödé ✓", "ratio": 0.25, "flags": [True, None]},
        ),
        Item(
            id="wk/emblem 2",
            category="world_knowledge",
            subcategory="",
            und_prompt="Name the emblem of Vorland.",
            gen_prompt="Draw the emblem of Vorland.",
        ),
        Item(
            id="WK/EMBLEM 2",
            category="reasoning",
            subcategory="puzzle",
            und_prompt="Which option?",
            gen_prompt="Mark the option.",
            image=picture(3, size=(40, 30)),
            reference=["C"],
        ),
    ]


def test_round_trip_is_exact_and_files_are_relative(tmp_path):
    items = make_items()
    jsonl = save_items(items, tmp_path / "suite")
    assert jsonl == tmp_path / "suite" / "items.jsonl"
    for loaded in (load_items(tmp_path / "suite"), load_items(jsonl)):
        assert loaded == items
        assert all(type(it.image) is Image.Image and it.image.mode == "RGB" for it in loaded if it.image)
    records = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]
    assert records[0]["image"] == "images/if-001.png"
    assert records[0]["reference_image"] == "images/if-001_ref.png"
    assert records[1]["image"] is None
    # ids that clash as file names (unsafe characters, case) still get their own image files
    assert len({r["image"] for r in records if r["image"]}) == 2
    assert all(not Path(r["image"]).is_absolute() for r in records if r["image"])


def test_loaded_images_hold_no_open_files(tmp_path):
    save_items(make_items(), tmp_path)
    before = len(os.listdir("/proc/self/fd"))
    items = load_items(tmp_path)
    assert len(os.listdir("/proc/self/fd")) == before
    for path in (tmp_path / "images").iterdir():
        path.unlink()
    assert items[0].image.getpixel((0, 0)) == picture(1).getpixel((0, 0))


def test_transparent_images_become_rgb_on_white(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    item = Item("a", "reasoning", "", "q?", "draw", image=rgba)
    loaded = load_items(save_items([item], tmp_path))[0]
    assert loaded.image.mode == "RGB"
    assert loaded.image.getpixel((1, 1)) == (255, 255, 255)
    assert loaded.image.getpixel((0, 0)) == (0, 0, 255)
    assert suite_hash([loaded]) == suite_hash([item])


def test_suite_hash_is_stable_and_sensitive(tmp_path):
    items = make_items()
    reference = suite_hash(items)
    assert len(reference) == 64 and int(reference, 16) >= 0
    assert suite_hash(load_items(save_items(items, tmp_path))) == reference
    assert suite_hash(list(reversed(items))) == reference

    changed = make_items()
    changed[0].image.putpixel((20, 15), (1, 2, 3))
    assert suite_hash(changed) != reference
    changed = make_items()
    changed[0].meta["seed"] = 8
    assert suite_hash(changed) != reference
    changed = make_items()
    changed[2].reference = ["D"]
    assert suite_hash(changed) != reference
    changed = make_items()
    changed[1].reference_image = picture(4)
    assert suite_hash(changed) != reference


def test_save_refuses_what_would_not_round_trip(tmp_path):
    item = make_items()[0]
    item.meta["position"] = (3, 4)
    with pytest.raises(ItemError, match=r"meta\['position'\] is a tuple") as err:
        save_items([item], tmp_path)
    assert (err.value.item, err.value.field) == ("if-001", "meta")
    with pytest.raises(ItemError, match="duplicate id"):
        save_items([make_items()[1], make_items()[1]], tmp_path)


GOOD = {"id": "x1", "category": "reasoning", "subcategory": "", "und_prompt": "q?", "gen_prompt": "draw"}


def write_suite(folder: Path, lines: list[str]) -> Path:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    picture(5).save(folder / "images" / "ok.png")
    (folder / "images" / "broken.png").write_bytes(b"not a png at all")
    (folder / "items.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def line(**changes) -> str:
    record = {**GOOD, **changes}
    return json.dumps({k: v for k, v in record.items() if v is not ...})


@pytest.mark.parametrize(
    "bad, message, item, field",
    [
        ('{"id": "x2", "category": ', "malformed JSON", None, None),
        ("[1, 2]", "expected a JSON object", None, None),
        (line(id="x2", und_prompt=...), "missing required field 'und_prompt'", "x2", "und_prompt"),
        (line(id="x2", gen_prompt=5), "gen_prompt must be a non-empty string", "x2", "gen_prompt"),
        (line(id="x2", reference="C"), "reference must be a list", "x2", "reference"),
        (line(id="x2", image=3), "relative image path", "x2", "image"),
        (line(id="x2", category="counting"), "unknown category 'counting'", "x2", "category"),
        (line(id="x2", colour="red"), "unknown field", "x2", "colour"),
        (line(id="x2", image="images/missing.png"), "does not exist", "x2", "image"),
        (line(id="x2", reference_image="images/broken.png"), "cannot read image", "x2", "reference_image"),
        (line(id="x2", image="../outside.png"), "leaves the suite folder", "x2", "image"),
        (line(), r"duplicate id \(first on line 1\)", "x1", "id"),
    ],
)
def test_load_errors_name_file_line_item_and_field(tmp_path, bad, message, item, field):
    folder = write_suite(tmp_path, [line(image="images/ok.png"), "", bad])
    with pytest.raises(ItemError, match=message) as err:
        load_items(folder)
    assert err.value.file == f"{folder / 'items.jsonl'}:3"
    assert (err.value.item, err.value.field) == (item, field)
    assert "items.jsonl:3" in str(err.value)


def test_missing_suite_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="items.jsonl"):
        load_items(tmp_path)
