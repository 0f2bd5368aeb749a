"""The import graph follows the layers of docs/architecture.md: nothing imports upward, including imports
inside functions (which hide cycles from a plain import check)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gapeval", "interventions", "probes", "experiments")

# Module prefixes by layer, lowest first; a module belongs to the longest prefix that matches it. A module
# may import from its own layer and the ones below it, never from a higher one.
LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "gapeval.items",
        "gapeval.options",
        "gapeval.targets",
        "gapeval.files",
        "gapeval.stats",
        "gapeval.threads",
        "gapeval.synth",
        "gapeval.manifest",
        "gapeval.io",
    ),
    ("gapeval.models", "gapeval.judges"),
    (
        "gapeval.runner",
        "gapeval.rundir",
        "gapeval.score",
        "gapeval.score_file",
        "gapeval.summary",
        "gapeval.report",
        "gapeval.suites",
        "gapeval.public",
        "gapeval.importer",
        "gapeval.release_verdicts",
        "gapeval.distributed",
        "gapeval.emergence",
        "gapeval.cli_args",
        "gapeval.testing",
    ),
    ("interventions", "probes"),
    ("experiments",),
    ("gapeval.cli", "gapeval.__main__"),
)


def layer_of(module: str) -> int | None:
    if module in PACKAGES:
        return 0  # a top package's __init__: its docstring only
    best: tuple[int, int] | None = None
    for number, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (number, len(prefix))
    return None if best is None else best[0]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, module: str) -> set[str]:
    """Every project module ``path`` imports, at any depth of its code (relative imports resolved)."""
    names: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names |= {f"{base}.{alias.name}" for alias in node.names}  # resolved to a module below
    return {n for n in names if n.split(".")[0] in PACKAGES}


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def test_every_module_has_a_layer():
    assert [m for m in project_modules() if layer_of(m) is None] == []


def test_no_module_imports_from_a_higher_layer():
    modules = project_modules()
    upward = []
    for module, path in modules.items():
        own = layer_of(module)
        for target in imported(path, module):
            if target not in modules:
                target = target.rpartition(".")[0]  # `from pkg.module import name`: the module
            if target in modules and (their := layer_of(target)) is not None and their > own:
                upward.append(f"{module} (layer {own}) imports {target} (layer {their})")
    assert upward == []


def test_the_check_sees_function_level_imports(tmp_path):
    """The walker finds an import hidden inside a function, the way plug-in cycles used to hide."""
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from gapeval.cli import main\n    return main\n")
    assert "gapeval.cli.main" in imported(source, "gapeval.models.m")
