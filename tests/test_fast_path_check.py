"""The fast-path check's arithmetic: which steps runs share, and the sign test on paired differences."""

import json

import pytest

from experiments.fast_path_check import common_steps, compare, sign_test


def test_common_steps_are_the_multiples_every_run_logged():
    a = {0: {}, 1500: {}, 3000: {}, 4500: {}}
    b = {0: {}, 1500: {}, 3000: {}, 3100: {}}
    assert common_steps([a, b], 1500) == [0, 1500, 3000]
    assert common_steps([], 1500) == []


def test_the_sign_test_counts_ties_out_and_gives_exact_tail_probabilities():
    assert sign_test([0.1, 0.2, 0.3]) == (3, 3, pytest.approx(1 / 8))
    assert sign_test([0.1, -0.2, 0.0, 0.3]) == (2, 3, pytest.approx(4 / 8))
    assert sign_test([-0.1, -0.2]) == (0, 2, pytest.approx(1.0))
    assert sign_test([]) == (0, 0, 1.0)


def _run(folder, rows):
    folder.mkdir()
    (folder / "emergence.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "train_log.jsonl").write_text(
        "".join(json.dumps({"step": r["step"], "loss_und": 1.0}) + "\n" for r in rows)
    )
    return folder


def test_compare_pairs_runs_at_their_last_shared_step(tmp_path, capsys):
    ref = _run(tmp_path / "ref", [{"step": s, "und_acc": 0.5, "gen_acc": 0.4} for s in (0, 1500, 3000)])
    fast = _run(tmp_path / "fast", [{"step": s, "und_acc": 0.6, "gen_acc": 0.3} for s in (0, 1500)])
    compare([(ref, fast)], [], 1500)
    out = capsys.readouterr().out
    assert "at step 1500" in out and "| 3000 |" not in out
    assert "und_acc: +0.100; 1 of 1 positive" in out and "gen_acc: -0.100; 0 of 1 positive" in out
    assert "und higher at 1 of 1 steps, mean difference +0.100 (steps 1500–1500)" in out
