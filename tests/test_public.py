"""The public GapEval layout and Hugging Face datasets, from fake trees built here (no downloads)."""

import json
from pathlib import Path

import pytest
from PIL import Image

from gapeval.io import load_items, save_items, suite_hash
from gapeval.items import ItemError
from gapeval.judges.select import NO_IMAGE_JUDGE, NO_TEXT_RULE, judge_for, needs_vlm
from gapeval.judges.text import TextJudge
from gapeval.judges.vlm import build_messages, load_rubrics
from gapeval.public import counting_spec, load_public, load_public_hf, resolve_path_suite


def colour_image(rgb, size=(12, 8)) -> Image.Image:
    return Image.new("RGB", size, rgb)


def write_item(root: Path, number: int, prompt, images: dict[str, Image.Image] | None = None) -> Path:
    """A data_<number> folder; ``images`` maps relative paths (``image/q.png``) to pictures."""
    folder = root / f"data_{number}"
    folder.mkdir(parents=True)
    text = prompt if isinstance(prompt, str) else json.dumps(prompt)
    (folder / "prompt.json").write_text(text, encoding="utf-8")
    for relative, image in (images or {}).items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        image.save(folder / relative)
    return folder


def prompt(category: str, **extra) -> dict:
    return {
        "category": category,
        "subcategory": extra.pop("subcategory", ""),
        "und_prompt": "What is it?",
        "gen_prompt": "Draw it.",
        "reference": extra.pop("reference", "an answer"),
        **extra,
    }


RED, GREEN, BLUE, GREY = (200, 0, 0), (0, 200, 0), (0, 0, 200), (90, 90, 90)
COUNTING = {"objects": ["apple", "orange"], "number": [1, 3]}  # the release's counting reference


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "GapEval"
    write_item(
        root,
        10,
        prompt("rule_based", reference=["broken into pieces", "shattered"]),
        {"image/vase.png": colour_image(RED), "ref/broken.png": colour_image(GREEN)},
    )
    write_item(
        root,
        2,
        prompt("counting", subcategory="Animals Counting", reference=[3, 5]),
        {"ref/a.jpg": colour_image(GREY)},
    )
    write_item(root, 3, prompt("Multi Hop"))  # world knowledge: no input image, no ref folder
    write_item(
        root,
        4,
        [prompt("reasoning", subcategory="puzzle", reference="C", img="image/q2.png")],
        {"image/q1.png": colour_image(RED), "image/q2.png": colour_image(BLUE)},
    )
    write_item(
        root,
        5,
        {
            **prompt("physics", expect_image="ref/answer.png"),
            "und_prompt": None,
            "problem": "Where does the ball land?",
        },
        {"inage/setup.png": colour_image(GREEN, size=(5, 5)), "ref/answer.png": colour_image(BLUE)},
    )
    write_item(root, 6, prompt(" multi hop "))
    write_item(root, 7, prompt("Multi-Hop"))
    write_item(root, 8, prompt("RULE-BASED"), {"image/x.png": Image.new("RGBA", (3, 3), (0, 0, 0, 0))})
    write_item(root, 11, prompt("counting", reference=COUNTING))
    write_item(root, 12, prompt("reasoning", reference={"answer": "B", "steps": [1, 2]}))
    (root / "notes").mkdir()
    (root / "data_old").mkdir()
    return root


def test_public_tree_maps_categories_images_and_references(tree):
    items = load_public(tree)
    by_id = {it.id: it for it in items}
    assert [it.id for it in items] == ["2", "3", "4", "5", "6", "7", "8", "10", "11", "12"]
    assert {it.id: it.category for it in items} == {
        "2": "numerical_perception",
        "3": "world_knowledge",
        "4": "reasoning",
        "5": "reasoning",
        "6": "world_knowledge",
        "7": "world_knowledge",
        "8": "instruction_following",
        "10": "instruction_following",
        "11": "numerical_perception",
        "12": "reasoning",
    }
    assert by_id["5"].meta == {"source_category": "physics", "source": "data_5"}
    assert by_id["5"].subcategory == "physics" and by_id["2"].subcategory == "Animals Counting"
    assert by_id["7"].meta["source_category"] == "Multi-Hop"
    assert all(it.spec is None for it in items if it.id != "11")

    assert by_id["10"].reference == ["broken into pieces", "shattered"]
    assert by_id["2"].reference == ["3", "5"]
    assert by_id["4"].reference == ["C"]
    assert by_id["5"].und_prompt == "Where does the ball land?"

    assert by_id["10"].image.getpixel((0, 0)) == RED and by_id["10"].reference_image.getpixel((0, 0)) == GREEN
    assert by_id["2"].image is None and by_id["2"].reference_image.mode == "RGB"
    assert by_id["3"].image is None and by_id["3"].reference_image is None
    assert by_id["4"].image.getpixel((0, 0)) == BLUE  # img picks among several input images
    assert by_id["5"].image.size == (5, 5) and by_id["5"].reference_image.getpixel((0, 0)) == BLUE
    assert by_id["8"].image.mode == "RGB" and by_id["8"].image.getpixel((1, 1)) == (255, 255, 255)


def test_public_items_round_trip_through_the_toolkit_format(tree, tmp_path):
    items = load_public(tree)
    again = load_items(save_items(items, tmp_path / "copy"))
    assert again == items
    assert suite_hash(again) == suite_hash(items)


def test_json_references_are_kept_structured_and_judged(tree):
    """Counting references are objects: the text judge reads per-object counts, the VLM gets the JSON text."""
    by_id = {it.id: it for it in load_public(tree)}
    counting, other = by_id["11"], by_id["12"]
    assert [json.loads(r) for r in counting.reference] == [COUNTING]
    assert counting.spec == {"und": {"type": "tally", "tally": {"apple": 1, "orange": 3}}}
    assert [json.loads(r) for r in other.reference] == [{"answer": "B", "steps": [1, 2]}]
    assert other.spec is None

    und = judge_for(counting, "und")
    for reply, correct in [
        ("After the swap: 1 apple and 3 oranges.", True),
        ("You need three oranges and one apple", True),
        ("apples: 1, oranges: 3", True),
        ("3 apples and 1 orange", False),
        ("1 apple", False),
    ]:
        verdict = und.judge(counting, reply)
        assert verdict.correct is correct and verdict.error is None, reply
    assert "orange=missing" in und.judge(counting, "1 apple").reason
    assert judge_for(counting, "gen").judge(counting, Image.new("RGB", (4, 4))).error == NO_IMAGE_JUDGE

    # no string match can decide a structured reference: a VLM judge, or an error (never a wrong answer)
    assert judge_for(other, "und").judge(other, "B").error == NO_TEXT_RULE
    vlm = judge_for(other, "und", vlm=TextJudge())
    assert isinstance(vlm, TextJudge) and needs_vlm([counting], "und") is False
    assert needs_vlm([counting, other], "und") is True
    case = build_messages(load_rubrics(), counting, "1 apple and 3 oranges")[1]["content"]
    assert json.dumps(COUNTING) in case


def test_counting_references_of_other_shapes_stay_text():
    assert counting_spec(json.dumps(COUNTING)) == counting_spec(COUNTING)  # a dataset column holds text
    assert counting_spec({"objects": ["cat"], "number": ["2"]})["und"]["tally"] == {"cat": 2}
    for odd in (
        {"objects": ["cat", "dog"], "number": [1]},
        {"objects": ["cat"], "number": [-1]},
        {"objects": ["cat", "cat"], "number": [1, 2]},
        {"objects": [""], "number": [1]},
        {"objects": ["cat"], "number": [True]},
        {"objects": "cat", "number": 1},
        ["cat", 1],
        "three cats",
    ):
        assert counting_spec(odd) is None, odd


def check_error(root: Path, folder: Path, message: str, field: str | None):
    with pytest.raises(ItemError, match=message) as err:
        load_public(root)
    assert err.value.file == str(folder / "prompt.json")
    assert err.value.item == folder.name.removeprefix("data_")
    assert err.value.field == field


@pytest.mark.parametrize(
    "content, images, message, field",
    [
        ('{"category": "counting", ', {}, "malformed JSON", None),
        (prompt("cooking"), {}, "unknown category 'cooking'", "category"),
        (prompt(None), {}, "unknown category None", "category"),
        ({**prompt("counting"), "gen_prompt": ""}, {}, "gen_prompt must be a non-empty string", "gen_prompt"),
        (
            prompt("reasoning"),
            {"image/a.png": colour_image(RED), "image/b.png": colour_image(BLUE)},
            "2 images",
            "img",
        ),
        (prompt("reasoning", img="image/zzz.png"), {}, "names image 'image/zzz.png'", "img"),
        (prompt("physics", expect_image="ref/none.png"), {}, "names image 'ref/none.png'", "expect_image"),
    ],
)
def test_public_errors_name_the_file_item_and_field(tmp_path, content, images, message, field):
    write_item(tmp_path, 1, prompt("counting"))
    folder = write_item(tmp_path, 9, content, images)
    check_error(tmp_path, folder, message, field)


def test_public_unreadable_image_and_missing_prompt(tmp_path):
    folder = write_item(tmp_path, 1, prompt("rule_based"))
    (folder / "image").mkdir()
    (folder / "image" / "q.png").write_bytes(b"garbage")
    check_error(tmp_path, folder, "cannot read image", "img")
    (folder / "prompt.json").unlink()
    check_error(tmp_path, folder, "missing prompt.json", None)


def test_public_finds_items_one_level_down_and_rejects_empty_roots(tmp_path):
    write_item(tmp_path / "data", 1, prompt("counting"))
    assert [it.id for it in load_public(tmp_path)] == ["1"]
    write_item(tmp_path / "more", 1, prompt("counting"))
    with pytest.raises(ItemError, match="duplicate id"):
        load_public(tmp_path)
    with pytest.raises(FileNotFoundError, match="no data_<id> folders"):
        load_public(tmp_path / "data" / "data_1")


def hf_rows() -> dict[str, list]:
    return {
        "id": [12, 3],
        "category": ["Multi Hop", "rule_based"],
        "subcategory": ["celebrity", "edit"],
        "und_prompt": ["Who is this?", "Describe it after the hammer."],
        "gen_prompt": ["Draw this person.", "Draw it after the hammer."],
        "reference": [["Ada"], ["broken", "pieces"]],
        "image": [None, colour_image(RED)],
        "reference_image": [colour_image(GREEN), colour_image(BLUE, size=(6, 6))],
    }


def check_hf_items(items):
    assert [it.id for it in items] == ["3", "12"]
    first, second = items
    assert (first.category, second.category) == ("instruction_following", "world_knowledge")
    assert first.reference == ["broken", "pieces"] and second.reference == ["Ada"]
    assert first.image.getpixel((0, 0)) == RED and type(first.image) is Image.Image
    assert first.reference_image.size == (6, 6) and second.image is None
    assert second.meta["source_category"] == "Multi Hop" and first.spec is None


def test_hf_dataset_saved_to_disk(tmp_path):
    import datasets

    dataset = datasets.Dataset.from_dict(hf_rows()).cast_column("image", datasets.Image())
    dataset = dataset.cast_column("reference_image", datasets.Image())
    dataset.save_to_disk(str(tmp_path / "single"))
    check_hf_items(load_public_hf(tmp_path / "single"))

    datasets.DatasetDict({"test": dataset, "dev": dataset.select([0])}).save_to_disk(str(tmp_path / "splits"))
    check_hf_items(load_public_hf(tmp_path / "splits", split="test"))
    assert [it.id for it in resolve_path_suite("hf", f"{tmp_path / 'splits'}#dev")] == ["12"]
    with pytest.raises(ValueError, match="choose one of the splits dev, test"):
        load_public_hf(tmp_path / "splits")

    bad = hf_rows()
    bad["category"][1] = "sorting"
    datasets.Dataset.from_dict(bad).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(ItemError, match="unknown category 'sorting'") as err:
        load_public_hf(tmp_path / "bad")
    assert (err.value.item, err.value.field) == ("3", "category") and "train row 1" in err.value.file


def test_hf_parquet_folder_and_path_suites(tmp_path):
    import datasets

    dataset = datasets.Dataset.from_dict(hf_rows()).cast_column("image", datasets.Image())
    dataset = dataset.cast_column("reference_image", datasets.Image())
    (tmp_path / "download" / "data").mkdir(parents=True)
    dataset.to_parquet(str(tmp_path / "download" / "data" / "test-00000-of-00001.parquet"))
    check_hf_items(load_public_hf(tmp_path / "download", cache_dir=tmp_path / "cache"))

    write_item(tmp_path / "tree", 1, prompt("counting"))
    assert [it.category for it in resolve_path_suite("public", str(tmp_path / "tree"))] == [
        "numerical_perception"
    ]
    save_items(load_public(tmp_path / "tree"), tmp_path / "mine")
    assert resolve_path_suite("jsonl", str(tmp_path / "mine")) == load_public(tmp_path / "tree")
    dataset.save_to_disk(str(tmp_path / "saved"))
    check_hf_items(resolve_path_suite("public", str(tmp_path / "saved")))
    with pytest.raises(FileNotFoundError, match="neither data_<id> folders"):
        resolve_path_suite("public", str(tmp_path / "cache-nothing"))
    with pytest.raises(ValueError, match="unknown suite kind 'zip'"):
        resolve_path_suite("zip", str(tmp_path))
