"""The gapeval command line: every subcommand through main(), help texts, and clean user errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gapeval.cli import COMMANDS, Command, build_parser, main, register
from gapeval.options import parse_key_values as parse_model_args
from gapeval.rundir import RESULTS, load_records

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    for name, args in (
        ("clean", []),
        ("noisy", ["--model-arg", "und_error=0.1", "--model-arg", "gen_error=0.5"]),
    ):
        code = main(
            [
                "run",
                "--model",
                "oracle",
                "--suite",
                "synth:40",
                "--out",
                str(root / name),
                "--no-progress",
                "--bootstrap",
                "20",
                *args,
            ]
        )
        assert code == 0
    return root


def test_run_writes_a_run_directory(runs, capsys):
    clean = runs / "clean"
    assert {"manifest.json", RESULTS, "summary.json", "report.md", "report.png", "images"} <= {
        p.name for p in clean.iterdir()
    }
    manifest = json.loads((runs / "noisy" / "manifest.json").read_text())
    assert manifest["model"]["config"]["und_error"] == 0.1 and manifest["model"]["config"]["gen_error"] == 0.5
    assert manifest["suite"]["id"] == "synth:n=40,seed=0"
    assert len(load_records(clean)) == 40
    assert (
        main(
            [
                "run",
                "--model",
                "oracle",
                "--suite",
                "synth:40",
                "--out",
                str(clean),
                "--no-progress",
                "--bootstrap",
                "20",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "already complete" in captured.err
    overall = json.loads((clean / "summary.json").read_text())["overall"]
    lo, hi = overall["gap_reference_ci"]
    assert overall["kappa"] is None  # every answer right: agreement beyond chance is undefined
    assert captured.out.splitlines() == [
        f"und acc {overall['und_acc']:.3f} · gen acc {overall['gen_acc']:.3f} · "
        f"Gap Score {overall['gap_reference']:.3f} [{lo:.3f}, {hi:.3f}] · κ — (40 items scored)",
        f"report: {clean / 'report.md'}",
    ]


def test_limit_takes_the_first_items(tmp_path):
    out = tmp_path / "run"
    assert (
        main(
            [
                "run",
                "--model",
                "oracle",
                "--suite",
                "synth:40",
                "--limit",
                "5",
                "--out",
                str(out),
                "--no-progress",
                "--bootstrap",
                "20",
            ]
        )
        == 0
    )
    assert [r["id"] for r in load_records(out)] == ["if-0000", "if-0001", "if-0002", "if-0003", "if-0004"]
    assert json.loads((out / "manifest.json").read_text())["suite"]["id"] == "synth:n=40,seed=0[:5]"


def test_report_and_compare(runs, tmp_path, capsys, monkeypatch):
    from tests_support import SavedFigures

    from gapeval.report import rows

    saved = SavedFigures(monkeypatch)
    assert main(["report", str(runs / "noisy")]) == 0
    assert capsys.readouterr().out.strip() == str(runs / "noisy" / "report.md")
    assert main(["compare", str(runs / "clean"), str(runs / "noisy"), "--out", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "clean (oracle): Gap" in table and "noisy (oracle): gen" in table and "| overall |" in table
    assert (tmp_path / "compare.md").read_text() == table.rstrip("\n") + "\n"
    gaps = []  # one bar group per run, categories then overall, as the table lists them
    for name in ("clean", "noisy"):
        by_category = dict(rows(json.loads((runs / name / "summary.json").read_text())))
        gaps += [round(by_category[c]["gap_reference"] or 0.0, 9) for c in by_category]
    assert saved.bars(tmp_path / "compare.png") == gaps
    assert gaps[: len(gaps) // 2] != gaps[len(gaps) // 2 :]


def test_suite_export_round_trips_into_a_run(runs, tmp_path, capsys):
    assert main(["suite", "export", "--suite", "synth:40", "--out", str(tmp_path / "suite")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "suite" / "items.jsonl")
    out = tmp_path / "run"
    assert (
        main(
            [
                "run",
                "--model",
                "oracle",
                "--suite",
                f"jsonl:{tmp_path / 'suite'}",
                "--out",
                str(out),
                "--no-progress",
                "--bootstrap",
                "20",
            ]
        )
        == 0
    )
    clean = json.loads((runs / "clean" / "manifest.json").read_text())
    assert json.loads((out / "manifest.json").read_text())["suite"]["hash"] == clean["suite"]["hash"]
    assert (out / RESULTS).read_bytes() == (runs / "clean" / RESULTS).read_bytes()


def test_score_prints_the_output_path(tmp_path, capsys):
    source = tmp_path / "rows.json"
    source.write_text(json.dumps({"m": [[0.2, 0.6, 0.05, 0.15]]}))
    assert main(["score", str(source)]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path == tmp_path / "rows_gapres.json"
    assert json.loads(path.read_text())["results"]["m"]["gap_mean"] == pytest.approx(0.739834, abs=1e-4)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--model", "nosuch", "--out", "X"], "unknown model 'nosuch'"),
        (["run", "--model", "oracle", "--suite", "synth:abc", "--out", "X"], "bad synth suite argument"),
        (["run", "--model", "oracle", "--out", "X", "--model-arg", "und_error"], "expects KEY=VALUE"),
        (
            ["run", "--model", "oracle", "--out", "X", "--model-arg", "und_error=2"],
            "und_error must be a number",
        ),
        (["run", "--model", "oracle", "--suite", "jsonl:/nonexistent", "--out", "X"], "/nonexistent"),
        (["report", "/nonexistent/run"], "does not exist"),
        (["run", "--model", "toy", "--out", "X", "--model-arg", "foo=1"], "foo; accepted: batch_size"),
        (["run", "--model", "oracle", "--out", "X", "--model-arg", "seed=x"], "seed must be an integer"),
        (
            ["run", "--model", "toy", "--out", "X", "--model-arg", "temperature=hot"],
            "temperature must be a number, got 'hot'",
        ),
        (["run", "--model", "py:nosuchmod:f", "--out", "X"], "expected py:MODULE:FACTORY"),
        (["run", "--model", "py:json:nosuch", "--out", "X"], "module 'json' has no 'nosuch'"),
        (["run", "--model", "toy:shared@abc", "--out", "X"], "VARIANT@STEP (an integer), VARIANT@seedN"),
        (["train-toy", "--steps", "0", "--out", "X"], "--steps must be at least 1"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_mismatched_run_directory_is_refused(runs, capsys):
    argv = ["run", "--model", "oracle", "--suite", "synth:40", "--out", str(runs / "clean"), "--seed", "3"]
    assert main([*argv, "--no-progress", "--bootstrap", "5"]) == 2
    assert "holds a different run" in capsys.readouterr().err


def test_model_args_are_typed():
    assert parse_model_args(["a=1", "b=0.5", "c=true", "d=auto", "e=null", "f=a=b"]) == {
        "a": 1,
        "b": 0.5,
        "c": True,
        "d": "auto",
        "e": None,
        "f": "a=b",
    }


def test_every_subcommand_has_help():
    parser = build_parser()
    for command in [c.name for c in COMMANDS] + ["suite export"]:
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([*command.split(), "--help"])
        assert exit_info.value.code == 0


def test_commands_can_be_registered(capsys):
    register(
        Command(
            "hello", "say hello", lambda p: p.add_argument("--name", default="x"), lambda a: print(a.name)
        )
    )
    try:
        assert main(["hello", "--name", "lead"]) == 0
        assert capsys.readouterr().out == "lead\n"
    finally:
        COMMANDS[:] = [c for c in COMMANDS if c.name != "hello"]


def test_train_toy_defaults_are_the_trainers():
    from gapeval.cli import TRAIN_DEFAULTS
    from gapeval.models.toy.train import TrainConfig

    assert {key: getattr(TrainConfig(), key) for key in TRAIN_DEFAULTS} == TRAIN_DEFAULTS
    parsed = build_parser().parse_args(["train-toy"])
    assert {key: getattr(parsed, key) for key in TRAIN_DEFAULTS} == TRAIN_DEFAULTS


def test_help_does_not_import_torch():
    """`gapeval --help` stays fast: only the commands that need torch import it, when they run."""
    code = "import sys; from gapeval.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


def test_python_dash_m_entry_point():
    done = subprocess.run(
        [sys.executable, "-m", "gapeval", "--help"], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0 and "compare" in done.stdout and "run" in done.stdout


CAPTURE_MODEL = """
from gapeval.models.oracle import OracleAdapter
from gapeval.synth.suite import build_suite

SEEN = {}


def make(**kwargs):
    SEEN.update(kwargs)
    return OracleAdapter(build_suite(40))
"""


def test_plugin_models_get_model_args_unchanged(tmp_path, monkeypatch):
    from gapeval.models.registry import load_model

    (tmp_path / "capture_model.py").write_text(CAPTURE_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    model = load_model("py:capture_model:make", [], **parse_model_args(["device_map=auto", "dtype=bfloat16"]))
    assert model.name == "oracle"
    assert sys.modules["capture_model"].SEEN == {"device_map": "auto", "dtype": "bfloat16"}
    with pytest.raises(ValueError, match="unknown model 'janus'"):
        load_model("janus", [])


def test_device_map_is_refused_under_a_launcher(tmp_path, monkeypatch, capsys):
    from gapeval import distributed

    monkeypatch.setattr(distributed, "current", lambda: distributed.Processes(rank=0, world=2))
    argv = [
        "run",
        "--model",
        "oracle",
        "--suite",
        "synth:8",
        "--out",
        str(tmp_path / "x"),
        "--model-arg",
        "device_map=auto",
    ]
    assert main(argv) == 2
    assert "device_map" in capsys.readouterr().err and not (tmp_path / "x").exists()
