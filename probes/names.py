"""What can be probed and where: names shared by the library and the light ``gapeval probe`` parser."""

ATTRIBUTES = ("colour", "shape", "cell", "entity")
POSITIONS = ("last", "entity", "entity_last", "answer")
SHUFFLES = 1000  # label shuffles of the permutation test: Holm over 10 tests still resolves p < 0.05

# (position, attribute) pairs whose pooled positions hold the label itself in their input tokens: a probe there
# reads the answer it was fed, not what the model knows. ``None`` stands for every attribute.
LABEL_IN_INPUT = {
    (
        "answer",
        None,
    ): "pools positions whose input is the teacher-forced answer (und: its words, which name the "
    "emblem; gen: the reference image's tokens, which draw it): only the last prompt token predicts the answer "
    "without seeing it, and that is position 'last'",
    ("entity", "entity"): "the entity span's input tokens are the realm's name, the label itself",
    ("entity_last", "entity"): "the entity span's input tokens are the realm's name, the label itself",
}


def label_in_input(position: str, attribute: str) -> str | None:
    """Why probing ``attribute`` at ``position`` would read the label from the input (None: it would not)."""
    return LABEL_IN_INPUT.get((position, attribute)) or LABEL_IN_INPUT.get((position, None))


# Erasers by name (``gapeval probe --method``): ``"module:function"`` fitting an affine eraser on captured states
# and labels (probes.erasers). Adding one is a function and a line here, or a register_eraser call.
ERASERS: dict[str, str] = {
    "leace": "probes.erasers:fit_leace",
    "mean": "probes.erasers:fit_mean_projection",
}


def register_eraser(name: str, target: str) -> None:
    ERASERS[name] = target
