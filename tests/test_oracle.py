"""The oracle adapter: error rates, their correlation, and wrong answers the judges reject."""

import math

import numpy as np
import pytest
from PIL import Image

from gapeval.items import Item, ItemError
from gapeval.judges.select import judge_for
from gapeval.models.base import Request
from gapeval.models.oracle import FALLBACK_TEXT, OracleAdapter, joint_error_probability
from gapeval.synth.suite import build_suite


@pytest.fixture(scope="module")
def suite() -> list[Item]:
    return build_suite()


def _requests(items, direction):
    return [Request(i.id, i.prompt(direction), i.image) for i in items]


def _accuracy(oracle, items):
    texts = oracle.understand(_requests(items, "und"))
    images = oracle.generate(_requests(items, "gen"))
    und = [judge_for(i, "und").judge(i, t).correct for i, t in zip(items, texts, strict=True)]
    gen = [judge_for(i, "gen").judge(i, g).correct for i, g in zip(items, images, strict=True)]
    assert None not in und + gen
    return float(np.mean(und)), float(np.mean(gen))


def test_passes_the_adapter_conformance_checks(suite):
    from gapeval.testing import check_umm

    check_umm(OracleAdapter(suite))


def test_joint_error_probability_is_clipped_to_feasible_range():
    assert joint_error_probability(0.2, 0.3, 0.0) == pytest.approx(0.06)
    assert joint_error_probability(0.3, 0.3, 1.0) == pytest.approx(0.3)
    assert joint_error_probability(0.2, 0.5, 1.0) == pytest.approx(0.2)  # rho=1 unreachable: min(p, q)
    assert joint_error_probability(0.2, 0.3, -1.0) == 0.0  # cannot go below zero
    assert joint_error_probability(0.8, 0.7, -1.0) == pytest.approx(0.5)  # p + q - 1


def test_error_rates_and_correlation_over_many_items(suite):
    oracle = OracleAdapter(suite[:8], und_error=0.3, gen_error=0.4, correlation=0.5, seed=3)
    errors = np.array([oracle.errors(f"item-{k}") for k in range(20000)], dtype=float)
    assert errors[:, 0].mean() == pytest.approx(0.3, abs=0.015)
    assert errors[:, 1].mean() == pytest.approx(0.4, abs=0.015)
    assert np.corrcoef(errors.T)[0, 1] == pytest.approx(0.5, abs=0.03)
    assert oracle.notes()["correlation_effective"] == pytest.approx(0.5)


def test_errors_depend_only_on_seed_and_id(suite):
    a = OracleAdapter(suite, und_error=0.5, gen_error=0.5, seed=1)
    b = OracleAdapter(suite[::-1][:50], und_error=0.5, gen_error=0.5, seed=1)
    c = OracleAdapter(suite, und_error=0.5, gen_error=0.5, seed=2)
    ids = [i.id for i in suite[::-1][:50]]
    assert [a.errors(x) for x in ids] == [b.errors(x) for x in ids]
    assert [a.errors(x) for x in ids] != [c.errors(x) for x in ids]
    # batching does not change answers
    one_by_one = [a.understand([r])[0] for r in _requests(suite[:30], "und")]
    assert a.understand(_requests(suite[:30], "und")) == one_by_one


def test_error_free_oracle_is_always_right(suite):
    assert _accuracy(OracleAdapter(suite), suite) == (1.0, 1.0)


def test_wrong_answers_are_plausible_and_judged_wrong(suite):
    oracle = OracleAdapter(suite, und_error=1.0, gen_error=1.0)
    assert _accuracy(oracle, suite) == (0.0, 0.0)
    texts = oracle.understand(_requests(suite, "und"))
    refs = {i.reference[0] for i in suite}
    assert all(t in refs and t != i.reference[0] for i, t in zip(suite, texts, strict=True))
    for item, image in zip(suite[:20], oracle.generate(_requests(suite[:20], "gen")), strict=True):
        assert image.size == item.reference_image.size


def test_error_rates_show_up_in_judged_accuracy(suite):
    und, gen = _accuracy(OracleAdapter(suite, und_error=0.1, gen_error=0.4), suite)
    n = len(suite)
    assert abs(und - 0.9) < 3.5 * math.sqrt(0.09 / n)
    assert abs(gen - 0.6) < 3.5 * math.sqrt(0.24 / n)


def _plain_item(item_id, category, reference, colour, with_input=True):
    return Item(
        id=item_id,
        category=category,
        subcategory="",
        und_prompt="q?",
        gen_prompt="draw",
        image=Image.new("RGB", (4, 4), "gray") if with_input else None,
        reference=[reference],
        reference_image=Image.new("RGB", (4, 4), colour),
    )


def test_items_without_spec_get_differing_answers_and_fallbacks():
    items = [
        _plain_item("a", "reasoning", "A", "red"),
        _plain_item(
            "b", "reasoning", "a", "red"
        ),  # same answer text (case) and same pixels: not a wrong answer
        _plain_item("c", "reasoning", "C", "blue"),
        _plain_item("d", "world_knowledge", "Dax", "green", with_input=False),
    ]
    oracle = OracleAdapter(items, und_error=1.0, gen_error=1.0)
    texts = oracle.understand(_requests(items, "und"))
    images = oracle.generate(_requests(items, "gen"))
    assert texts[:2] == ["C", "C"] and texts[2] in ("A", "a") and texts[3] == FALLBACK_TEXT
    assert images[0].getpixel((0, 0)) == (0, 0, 255)
    assert images[2].getpixel((0, 0)) == (255, 0, 0)
    assert images[3].getpixel((0, 0)) == (255, 255, 255)  # no other item, no input image: a blank canvas
    alone = _plain_item("e", "numerical_perception", "5", "red")
    oracle = OracleAdapter([alone], gen_error=1.0)
    assert oracle.generate(_requests([alone], "gen"))[0].getpixel((0, 0)) == (
        128,
        128,
        128,
    )  # input unchanged


def test_bad_configuration_is_refused(suite):
    with pytest.raises(ValueError, match="gen_error"):
        OracleAdapter(suite, gen_error=1.5)
    with pytest.raises(ValueError, match="correlation"):
        OracleAdapter(suite, correlation=-2)
    missing = _plain_item("x", "reasoning", "A", "red")
    missing.reference_image = None
    with pytest.raises(ItemError, match="item=x, field=reference_image"):
        OracleAdapter([missing])
    with pytest.raises(KeyError, match="no ground truth"):
        OracleAdapter(suite[:2]).understand([Request("nope", "q")])
