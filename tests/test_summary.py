"""Record summaries: joint counts, accuracies, Gap Scores with bootstrap intervals, κ and McNemar."""

from __future__ import annotations

import json
import math
from collections import OrderedDict

import numpy as np
import pytest

from gapeval import score
from gapeval.score import gap_score_reference
from gapeval.stats import cohen_kappa, mcnemar_exact, percentile_ci
from gapeval.summary import joint_counts, summarize


def test_kappa_and_mcnemar_hand_computed():
    # n=50: observed agreement 0.7, und 0.5, gen 0.6, chance 0.5 -> kappa 0.4
    assert math.isclose(cohen_kappa(20, 5, 10, 15), 0.4)
    assert math.isclose(cohen_kappa(30, 0, 0, 20), 1.0)
    assert math.isclose(cohen_kappa(0, 25, 25, 0), -1.0)
    assert cohen_kappa(40, 0, 0, 0) is None  # chance agreement is 1
    assert cohen_kappa(0, 0, 0, 0) is None
    # two-sided exact binomial: 2 * P(X <= 5 | 15, 1/2) = 2 * 4944 / 2**15
    assert math.isclose(mcnemar_exact(5, 10), 4944 / 2**14)
    assert math.isclose(mcnemar_exact(10, 5), 4944 / 2**14)
    assert mcnemar_exact(0, 0) == 1.0
    assert math.isclose(mcnemar_exact(0, 6), 2 / 2**6)


def test_percentile_ci():
    assert percentile_ci(np.arange(101)) == pytest.approx([2.5, 97.5])
    assert percentile_ci(np.array([])) is None


def _records(spec: dict[str, list[tuple[bool | None, bool | None]]]) -> list[dict]:
    return [
        {"id": f"{cat}-{i}", "category": cat, "subcategory": "", "und": {"correct": u}, "gen": {"correct": g}}
        for cat, outcomes in spec.items()
        for i, (u, g) in enumerate(outcomes)
    ]


def test_joint_counts_excludes_judge_errors():
    records = _records(
        {
            "reasoning": [(True, True)] * 3 + [(True, False)] * 2 + [(None, True)],
            "world_knowledge": [(False, True), (False, False), (True, None)],
        }
    )
    table = joint_counts(records)
    assert list(table) == ["world_knowledge", "reasoning", "overall"]  # the toolkit's category order
    r = table["reasoning"]
    assert (r["n11"], r["n10"], r["n01"], r["n00"], r["n"], r["n_error"]) == (3, 2, 0, 0, 5, 1)
    assert (r["und_acc"], r["gen_acc"], r["p11"], r["p10"]) == (1.0, 0.6, 0.6, 0.4)
    o = table["overall"]
    assert (o["n11"], o["n10"], o["n01"], o["n00"], o["n"], o["n_error"]) == (3, 2, 1, 1, 7, 2)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"id": "a", "und": {"correct": True}, "gen": {"correct": True}}, "record a: field 'category'"),
        ({"id": "b", "category": "reasoning", "gen": {"correct": True}}, "record b: field 'und'"),
        (
            {"id": "c", "category": "reasoning", "und": {"correct": 1}, "gen": {"correct": True}},
            "'und.correct'",
        ),
    ],
)
def test_bad_records_name_the_record_and_field(record, message):
    with pytest.raises(ValueError, match=message):
        joint_counts([record])


def _synthetic_run(und_acc: float, gen_acc: float, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    sizes = {"instruction_following": 30, "numerical_perception": 30, "world_knowledge": 45, "reasoning": 95}
    spec = {
        cat: [(bool(rng.random() < und_acc), bool(rng.random() < gen_acc)) for _ in range(n)]
        for cat, n in sizes.items()
    }
    return _records(spec)


def test_summarize_on_synthetic_records(monkeypatch):
    records = _synthetic_run(0.9, 0.5, seed=0) + _records({"reasoning": [(None, None)]})
    summary = summarize(records, bootstrap=30, seed=3)
    json.dumps(summary, allow_nan=False)  # summary.json is strict JSON
    monkeypatch.setattr(score, "_FITS", OrderedDict())  # refitted, not recalled: fits are deterministic
    assert summary == summarize(records, bootstrap=30, seed=3)
    cats, overall = summary["categories"], summary["overall"]
    assert list(cats) == ["instruction_following", "numerical_perception", "world_knowledge", "reasoning"]
    assert overall["n"] == 200 and overall["n_error"] == 1
    assert math.isclose(overall["gap_reference"], np.mean([c["gap_reference"] for c in cats.values()]))
    rows = [[c[k] for k in ("p11", "p10", "p01", "p00")] for c in cats.values()]
    assert np.allclose([c["gap_reference"] for c in cats.values()], gap_score_reference(rows).gaps)
    for stats in [*cats.values(), overall]:
        assert math.isclose(stats["disagreement"], stats["p10"] + stats["p01"])
        assert stats["kappa"] == cohen_kappa(stats["n11"], stats["n10"], stats["n01"], stats["n00"])
        assert 0.0 <= stats["mcnemar_p"] <= 1.0
        for kind in ("reference", "identified"):
            lo, hi = stats[f"gap_{kind}_ci"]
            assert 0.0 <= lo <= hi <= 1.0 and 0.0 <= stats[f"gap_{kind}"] <= 1.0
    assert overall["mcnemar_p"] < 1e-6  # 0.9 vs 0.5 accuracy on 200 items: a clear asymmetry


def test_summarize_gap_grows_with_the_direction_asymmetry():
    balanced = summarize(_synthetic_run(1.0, 1.0, seed=1), bootstrap=0)
    lopsided = summarize(_synthetic_run(0.9, 0.4, seed=1), bootstrap=0)
    assert balanced["overall"]["gap_reference"] < 0.01
    assert lopsided["overall"]["gap_reference"] > balanced["overall"]["gap_reference"] + 0.2
    assert lopsided["overall"]["gap_identified"] > balanced["overall"]["gap_identified"] + 0.2
    assert balanced["overall"]["gap_reference_ci"] is None  # no resamples, no interval


def test_summarize_without_scored_items():
    summary = summarize(_records({"reasoning": [(None, True)]}), bootstrap=5)
    assert summary["overall"]["n"] == 0 and summary["overall"]["gap_reference"] is None
    json.dumps(summary, allow_nan=False)
