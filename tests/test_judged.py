"""In-memory judging (interventions.judged): the same verdicts as a run, per item and direction."""

from __future__ import annotations

from gapeval.models.oracle import OracleAdapter
from gapeval.suites import get_suite
from interventions.judged import accuracy, judged


def test_judged_matches_the_oracle_and_keeps_adapter_errors_per_item():
    items = get_suite("synth:24").items
    perfect = judged(OracleAdapter(items, und_error=0.0, gen_error=0.0), items)
    assert accuracy(perfect, "und") == accuracy(perfect, "gen") == 1.0
    assert all(isinstance(r["und"]["output"], str) and r["gen"]["output"] is None for r in perfect)

    wrong_gen = judged(OracleAdapter(items, und_error=0.0, gen_error=1.0), items, directions=["gen"])
    assert accuracy(wrong_gen, "gen") == 0.0 and "und" not in wrong_gen[0]

    class FailsFirst(OracleAdapter):
        def understand(self, requests):
            answers = super().understand(requests)
            return [FileNotFoundError("no output"), *answers[1:]]

    failed = judged(FailsFirst(items, und_error=0.0, gen_error=0.0), items, directions=["und"])
    assert failed[0]["und"]["correct"] is None and "no output" in failed[0]["und"]["reason"]
    assert accuracy(failed, "und") == 1.0  # the failed item is not counted as wrong
