"""The built-in world: shapes, colours, cells, fictional realms, and the pixels that show them.

Everything the synth suite asks and everything the built-in UMM learns comes from here, so text and pictures
refer to the same facts. Images are real RGB pixels: a 4×4 grid of 10-px cells, one object per cell (a 6-px
shape with ±1 px jitter inside the cell's interior); a cell's 1-px border is reserved for the white frame that
marks an answer. :func:`parse_scene` reads a picture back from pixels alone, so judges never see tokens.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

GRID = 4
CELL = 10
SIZE = GRID * CELL
SHAPE_PX = 6
JITTER = 1
BACKGROUND = (0, 0, 0)
MARK = (255, 255, 255)
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 70),
    "blue": (40, 90, 230),
    "yellow": (235, 220, 40),
    "purple": (150, 60, 210),
    "orange": (240, 130, 20),
}
SHAPES = ("circle", "square", "triangle", "cross")
LETTERS = "ABCD"
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

Cell = tuple[int, int]


def _shape_masks() -> dict[str, np.ndarray]:
    y, x = np.mgrid[0:SHAPE_PX, 0:SHAPE_PX]
    c = (SHAPE_PX - 1) / 2
    circle = (x - c) ** 2 + (y - c) ** 2 <= 7.0
    square = np.ones((SHAPE_PX, SHAPE_PX), bool)
    half_width = (y // 2) + 1  # rows 0-1: 2 px, 2-3: 4 px, 4-5: 6 px
    triangle = np.abs(x - c) < half_width
    cross = (x == y) | (x + y == SHAPE_PX - 1)
    return {"circle": circle, "square": square, "triangle": triangle, "cross": cross}


SHAPE_MASKS = _shape_masks()


@dataclass(frozen=True, order=True)
class Obj:
    shape: str
    colour: str

    @property
    def kind(self) -> str:
        """How text names it: ``"red circle"``."""
        return f"{self.colour} {self.shape}"


@dataclass
class Scene:
    """What a picture shows: objects by cell, and the cells framed by a white mark."""

    objects: dict[Cell, Obj] = field(default_factory=dict)
    marks: frozenset[Cell] = frozenset()

    def to_json(self) -> dict:
        return {
            "objects": [[r, c, o.shape, o.colour] for (r, c), o in sorted(self.objects.items())],
            "marks": [list(m) for m in sorted(self.marks)],
        }

    @classmethod
    def from_json(cls, data: dict) -> Scene:
        objects = {(int(r), int(c)): Obj(shape, colour) for r, c, shape, colour in data.get("objects", [])}
        return cls(objects, frozenset((int(r), int(c)) for r, c in data.get("marks", [])))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Scene) and self.objects == other.objects and self.marks == other.marks

    def kinds(self) -> list[tuple[str, str]]:
        """The multiset of (shape, colour), sorted: what a position-free comparison looks at."""
        return sorted((o.shape, o.colour) for o in self.objects.values())

    def describe(self) -> str:
        """Canonical text: objects in row-major order, ``"red circle at r0c1, blue square at r2c3"``."""
        if not self.objects:
            return "nothing"
        return ", ".join(f"{o.kind} at {cell_word(cell)}" for cell, o in sorted(self.objects.items()))


def cell_word(cell: Cell) -> str:
    return f"r{cell[0]}c{cell[1]}"


def plural(kind: str, n: int) -> str:
    return kind if n == 1 else kind + ("es" if kind.endswith("cross") else "s")


def render(scene: Scene, rng: random.Random | None = None) -> Image.Image:
    """Draw a scene. With ``rng`` each object is jittered by up to ±1 px (the world's natural variation)."""
    return Image.fromarray(render_pixels(scene, rng), "RGB")


def render_pixels(scene: Scene, rng: random.Random | None = None) -> np.ndarray:
    """:func:`render`'s pixels, (SIZE, SIZE, 3) uint8: what the trainer encodes, without a round trip
    through PIL (a quarter of building a training batch)."""
    img = np.zeros((SIZE, SIZE, 3), np.uint8)
    img[:] = BACKGROUND
    for (r, c), obj in scene.objects.items():
        dy = rng.randint(-JITTER, JITTER) if rng else 0
        dx = rng.randint(-JITTER, JITTER) if rng else 0
        y0 = r * CELL + (CELL - SHAPE_PX) // 2 + dy
        x0 = c * CELL + (CELL - SHAPE_PX) // 2 + dx
        img[y0 : y0 + SHAPE_PX, x0 : x0 + SHAPE_PX][SHAPE_MASKS[obj.shape]] = COLOURS[obj.colour]
    for r, c in scene.marks:
        y0, x0 = r * CELL, c * CELL
        img[y0, x0 : x0 + CELL] = MARK
        img[y0 + CELL - 1, x0 : x0 + CELL] = MARK
        img[y0 : y0 + CELL, x0] = MARK
        img[y0 : y0 + CELL, x0 + CELL - 1] = MARK
    return img


# --- reading pixels back -------------------------------------------------------------------------------------

_PALETTE = np.array(list(COLOURS.values()), np.float32)
_PALETTE_NAMES = list(COLOURS)
_BORDER = np.zeros((CELL, CELL), bool)
_BORDER[0, :] = _BORDER[-1, :] = _BORDER[:, 0] = _BORDER[:, -1] = True
_TEMPLATES: list[tuple[str, np.ndarray]] = []
for _name, _mask in SHAPE_MASKS.items():
    for _dy in range(-JITTER, JITTER + 1):
        for _dx in range(-JITTER, JITTER + 1):
            _t = np.zeros((CELL - 2, CELL - 2), bool)
            _o = (CELL - SHAPE_PX) // 2 - 1
            _t[_o + _dy : _o + _dy + SHAPE_PX, _o + _dx : _o + _dx + SHAPE_PX] = _mask
            _TEMPLATES.append((_name, _t))
_TEMPLATE_STACK = np.stack([t for _, t in _TEMPLATES])


@dataclass
class CellReading:
    """What one cell's pixels say. ``obj`` is None for an empty cell; ``problem`` is set when unreadable."""

    obj: Obj | None
    marked: bool
    problem: str | None = None


def read_cell(patch: np.ndarray) -> CellReading:
    """Classify a CELL×CELL×3 uint8 patch: mark frame, then one shape of one palette colour, or empty."""
    p = patch.astype(np.float32)
    border = p[_BORDER]
    white = (border.min(axis=1) > 180).mean()
    dark_border = (border.max(axis=1) < 60).mean()
    if white >= 0.85:
        marked = True
    elif dark_border >= 0.85:
        marked = False
    else:
        return CellReading(None, False, "cell border is neither background nor a mark frame")
    inner = p[1:-1, 1:-1]
    fg = inner.max(axis=2) > 70
    n_fg = int(fg.sum())
    if n_fg <= 3:
        return CellReading(None, marked)
    if n_fg < 10:
        return CellReading(None, marked, f"{n_fg} stray foreground pixels")
    pixels = inner[fg]
    dist = np.linalg.norm(pixels[:, None, :] - _PALETTE[None], axis=2)
    nearest = dist.argmin(axis=1)
    counts = np.bincount(nearest, minlength=len(_PALETTE))
    best = int(counts.argmax())
    if counts[best] < 0.85 * n_fg or np.median(dist[nearest == best, best]) > 60:
        return CellReading(None, marked, "foreground is not one palette colour")
    hamming = (_TEMPLATE_STACK != fg[None]).sum(axis=(1, 2))
    order = np.argsort(hamming)
    best_shape, best_d = _TEMPLATES[order[0]][0], int(hamming[order[0]])
    rival = next(int(hamming[i]) for i in order if _TEMPLATES[i][0] != best_shape)
    if best_d > 6 or rival - best_d < 4:
        return CellReading(None, marked, f"shape unclear (best {best_shape} off by {best_d} px)")
    return CellReading(Obj(best_shape, _PALETTE_NAMES[best]), marked)


def to_grid_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """RGB uint8 array at the world's resolution (an array from :func:`render_pixels` passes through).

    Larger pictures (a real UMM's output, or a smoothly resized one) are read at the centre of each world
    pixel: averaging whole blocks would blend shape edges with the background into off-palette colours.
    """
    arr = image if isinstance(image, np.ndarray) else np.asarray(image.convert("RGB"), np.uint8)
    if arr.shape[:2] == (SIZE, SIZE):
        return arr
    ys = ((np.arange(SIZE) + 0.5) * arr.shape[0] / SIZE).astype(int)
    xs = ((np.arange(SIZE) + 0.5) * arr.shape[1] / SIZE).astype(int)
    return arr[ys][:, xs]


@dataclass
class ParsedScene:
    scene: Scene
    problems: dict[Cell, str]

    @property
    def readable(self) -> bool:
        return not self.problems


def parse_scene(image: Image.Image) -> ParsedScene:
    """Read every cell of a picture; cells that fit no object are reported, never guessed."""
    arr = to_grid_array(image)
    objects: dict[Cell, Obj] = {}
    marks: set[Cell] = set()
    problems: dict[Cell, str] = {}
    for r in range(GRID):
        for c in range(GRID):
            reading = read_cell(arr[r * CELL : (r + 1) * CELL, c * CELL : (c + 1) * CELL])
            if reading.problem:
                problems[(r, c)] = reading.problem
                continue
            if reading.obj:
                objects[(r, c)] = reading.obj
            if reading.marked:
                marks.add((r, c))
    return ParsedScene(Scene(objects, frozenset(marks)), problems)


# --- entities ------------------------------------------------------------------------------------------------

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z")
_VOWELS = ("a", "e", "i", "o", "u")


@dataclass(frozen=True)
class Realm:
    """A fictional realm: facts that text states and an emblem that pictures show."""

    name: str
    founder: str
    emblem: Obj
    emblem_cell: Cell
    pictured: bool  # whether training data may show this realm's emblem as a picture

    @property
    def emblem_scene(self) -> Scene:
        return Scene({self.emblem_cell: self.emblem})


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables))


def _reserve_realms(rng: random.Random, n: int, taken: set[str], kinds: list[Obj]) -> list[Realm]:
    """``n`` never-pictured realms named like the taught ones (so the name's form gives nothing away).

    ``taken`` (the taught realms' and founders' names) grows with every name drawn, so no two names collide.
    """

    def fresh(syllables: int) -> str:
        while (w := _word(rng, syllables).capitalize()) in taken:
            pass
        taken.add(w)
        return w

    return [
        Realm(
            name=fresh(3),
            founder=fresh(2),
            emblem=kinds[rng.randrange(len(kinds))],
            emblem_cell=(rng.randrange(GRID), rng.randrange(GRID)),
            pictured=False,
        )
        for _ in range(n)
    ]


class World:
    """The synth world for one seed: realms with founders and emblems, plus the scene vocabulary.

    ``pictured_fraction`` of realms have their emblem shown as a picture in training; the rest are known from
    text alone, which is what the world-knowledge items probe.

    Reserve realms are targets for knowledge injection, ``n_reserve`` of each kind: ``reserve_known`` realms
    are taught in text by name and founder but their emblem never (a new fact about a known entity);
    ``reserve_unseen`` realms are in the tokenizer's vocabulary and nowhere in training (a new entity). Their
    emblems are what an inject experiment would teach. They come from a random stream of their own, so the
    taught realms (and the synth suite) are the same with or without them.
    """

    def __init__(
        self, seed: int = 0, n_realms: int = 48, pictured_fraction: float = 0.5, n_reserve: int = 16
    ):
        rng = random.Random(f"world-{seed}")
        names: set[str] = set()
        realms_names, founders = [], []
        while len(realms_names) < n_realms:
            w = _word(rng, 3).capitalize()
            if w not in names:
                names.add(w)
                realms_names.append(w)
        while len(founders) < n_realms:
            w = _word(rng, 2).capitalize()
            if w not in names:
                names.add(w)
                founders.append(w)
        kinds = [Obj(s, c) for s in SHAPES for c in COLOURS]
        pictured = set(rng.sample(range(n_realms), round(pictured_fraction * n_realms)))
        self.seed = seed
        self.realms = [
            Realm(
                name=realms_names[i],
                founder=founders[i],
                emblem=kinds[rng.randrange(len(kinds))],
                emblem_cell=(rng.randrange(GRID), rng.randrange(GRID)),
                pictured=i in pictured,
            )
            for i in range(n_realms)
        ]
        reserve = _reserve_realms(random.Random(f"world-{seed}-reserve"), 2 * n_reserve, names, kinds)
        self.reserve_known, self.reserve_unseen = reserve[:n_reserve], reserve[n_reserve:]

    @classmethod
    def extended(
        cls, seed: int = 0, n_realms: int = 48, pictured_share: float = 0.5, n_reserve: int = 16
    ) -> World:
        """The default world with another number of taught realms and/or another pictured share.

        The default world's realms keep their names, founders and emblems; fewer realms are a prefix of them,
        more add realms drawn from a stream of their own (``world-{seed}-extra``), named like the others and
        clashing with no default or reserve name. So the reserve realms and the synth suite stay as they are.
        Pictured realms are chosen in a fixed order per group (default realms: the default's pictured ones
        first; added realms: a seeded order), so a larger share only adds realms, and the defaults give the
        default world.
        """
        world = cls(seed, n_reserve=n_reserve)
        base, extra = world.realms[:n_realms], max(0, n_realms - len(world.realms))
        taken = {
            w for r in world.realms + world.reserve_known + world.reserve_unseen for w in (r.name, r.founder)
        }
        rng = random.Random(f"world-{seed}-extra")
        added = _reserve_realms(rng, extra, taken, all_kinds())
        order = random.Random(f"world-{seed}-pictured")
        ranked = [
            sorted(range(len(base)), key=lambda i: (not base[i].pictured, order.random())),
            order.sample(range(len(added)), len(added)),
        ]
        world.realms = [
            dataclasses.replace(r, pictured=k in set(rank[: round(pictured_share * len(group))]))
            for group, rank in zip((base, added), ranked, strict=True)
            for k, r in enumerate(group)
        ]
        return world

    def realm(self, name: str) -> Realm:
        """A realm by name: taught or reserve (see :attr:`reserve_known`, :attr:`reserve_unseen`)."""
        for r in self.realms + self.reserve_known + self.reserve_unseen:
            if r.name == name:
                return r
        raise KeyError(name)

    def facts(self) -> list[str]:
        """Every fact of the world as a plain sentence (what a text corpus about the world would say)."""
        out = []
        for r in self.realms:
            out.append(f"{r.name} was founded by {r.founder}.")
            out.append(f"The emblem of {r.name} is a {r.emblem.kind} at {cell_word(r.emblem_cell)}.")
        return out


def all_cells() -> list[Cell]:
    return [(r, c) for r in range(GRID) for c in range(GRID)]


def all_kinds() -> list[Obj]:
    return [Obj(s, c) for s in SHAPES for c in COLOURS]


def random_scene(
    rng: random.Random, n: int, cells: Iterable[Cell] | None = None, kinds: list[Obj] | None = None
) -> Scene:
    """``n`` objects in distinct random cells (from ``cells``), kinds drawn from ``kinds``."""
    pool = list(cells) if cells is not None else all_cells()
    kinds = kinds or all_kinds()
    return Scene({cell: rng.choice(kinds) for cell in rng.sample(pool, n)})


def counted_scene(groups: list[tuple[Obj, int]]) -> Scene:
    """The canonical picture of counts: kinds in the order given, filling cells row by row."""
    kinds = [obj for obj, n in groups for _ in range(n)]
    if len(kinds) > GRID * GRID:
        raise ValueError(f"{len(kinds)} objects do not fit a {GRID}x{GRID} grid")
    return Scene(dict(zip(all_cells(), kinds, strict=False)))
