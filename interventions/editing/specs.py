"""Edit specs: a declarative description of knowledge to inject or replace, and the items it implies.

One JSON object per line of a ``.jsonl`` file::

    {"id": "e0", "kind": "edit", "subject": "Rodaga", "relation": "emblem",
     "aliases": ["the realm founded by Tave"],
     "new": {"text": "blue square at r1c2", "scene": {...} | "image": "new.png", "check": {...}},
     "old": {...} | null,
     "train": {"und": ["Describe the emblem of Rodaga.", ...], "gen": ["Draw the emblem of Rodaga.", ...]},
     "targets": [{"und": "...", "gen": "..."}], "generality": [{"und": "...", "gen": "..."}]}

A value is what each direction answers: ``text`` for und, a picture for gen (an image path relative to the file,
or a synth ``scene`` rendered here), and an optional machine-checkable ``check`` (a synth judge spec) — without
it the text judge compares ``text`` and images need a VLM judge, as for any item. Explicit prompts and answers
make a spec usable with any model. Training examples pair the ``train`` prompts with the new value; targets
and generality prompts become items asked in both directions. ``aliases`` are other names of the subject
(e.g. the two-hop route), so locality items never mention the edited subject.
"""

from __future__ import annotations

import json
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from gapeval.files import numbered_jsonl
from gapeval.items import Item
from gapeval.synth.suite import (
    GENERATORS,
    WK_SUBJECT,
    WK_UND,
    item_key,
    make_world_knowledge,
    suite_phrasing,
    world_knowledge_prompts,
)
from gapeval.synth.world import COLOURS, SHAPES, Obj, Scene, World, render

KINDS = ("inject", "edit")
ROLES = ("target", "generality", "locality")


class SpecError(ValueError):
    """A malformed spec; the message names the file, line and field."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None, field: str = ""):
        where = ", ".join(
            f"{k}={v}" for k, v in (("file", file), ("line", line), ("field", field or None)) if v is not None
        )
        super().__init__(f"{message} ({where})" if where else message)


@dataclass(frozen=True)
class Value:
    """One answer in both directions: the text und says, the picture gen draws, how judges check both."""

    text: str
    image: Image.Image
    check: dict[str, Any] | None = None

    def reference(self, prompts: dict[str, str], item_id: str, role: str, meta: dict) -> Item:
        return Item(
            id=item_id,
            category="world_knowledge",
            subcategory=role,
            und_prompt=prompts["und"],
            gen_prompt=prompts["gen"],
            reference=[self.text],
            reference_image=self.image,
            spec={"und": self.check, "gen": self.check} if self.check else None,
            meta=meta,
        )


@dataclass(frozen=True)
class EditSpec:
    id: str
    kind: str
    subject: str
    relation: str
    new: Value
    old: Value | None
    train: dict[str, list[str]]
    targets: list[dict[str, str]]
    generality: list[dict[str, str]] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    group: str = (
        ""  # optional label to break results down by (synth inject: "known entity" / "unseen entity")
    )

    def examples(self, direction: str) -> tuple[list[str], list[Any]]:
        """Training prompts of one direction and their answers (new text for und, new picture for gen)."""
        prompts = self.train[direction]
        answer = self.new.text if direction == "und" else self.new.image
        return list(prompts), [answer] * len(prompts)

    def items(self, role: str, value: Value | None = None) -> list[Item]:
        """Target or generality items, referenced to ``value`` (the new one by default; ``old`` to ask
        whether the model still gives the old answer)."""
        value = value or self.new
        prompts = self.targets if role == "target" else self.generality
        return [
            value.reference(p, f"{self.id}/{role}-{k}", role, {"edit": self.id, "role": role})
            for k, p in enumerate(prompts)
        ]

    def mentions(self, text: str) -> bool:
        return any(name in text for name in (self.subject, *self.aliases))


# --- reading ---------------------------------------------------------------------------------------------


def _obj(pair: Any, fail) -> Obj:
    if not (isinstance(pair, list) and len(pair) == 2):
        raise fail("expected [shape, colour]")
    shape, colour = pair
    if shape not in SHAPES or colour not in COLOURS:
        raise fail(f"the world cannot draw {colour} {shape}: shapes {SHAPES}, colours {tuple(COLOURS)}")
    return Obj(shape, colour)


def _value(data: Any, name: str, base: Path, fail) -> Value:
    if not isinstance(data, dict):
        raise fail(f"{name} must be an object with text and scene or image", name)
    text = data.get("text")
    if not isinstance(text, str) or not text.strip():
        raise fail("must be a non-empty string", f"{name}.text")
    if ("scene" in data) == ("image" in data):
        raise fail("give exactly one of scene (synth) or image (a path)", name)
    if "scene" in data:
        scene = data["scene"]
        if not isinstance(scene, dict) or not isinstance(scene.get("objects"), list):
            raise fail("expected {'objects': [[row, col, shape, colour], ...]}", f"{name}.scene")
        for k, entry in enumerate(scene["objects"]):
            if not (isinstance(entry, list) and len(entry) == 4):
                raise fail("expected [row, col, shape, colour]", f"{name}.scene.objects[{k}]")
            _obj(entry[2:], lambda m, k=k: fail(m, f"{name}.scene.objects[{k}]"))
        image = render(Scene.from_json(scene))
    else:
        path = base / str(data["image"])
        try:
            with Image.open(path) as im:
                image = im.convert("RGB")
        except (OSError, ValueError) as err:
            raise fail(f"cannot read image {path}: {err}", f"{name}.image") from None
    check = data.get("check")
    if check is not None:
        if not isinstance(check, dict) or check.get("type") != "objects":
            raise fail(
                "only {'type': 'objects', 'objects': [[shape, colour], ...]} is supported", f"{name}.check"
            )
        for k, pair in enumerate(check.get("objects") or [None]):
            _obj(pair, lambda m, k=k: fail(m, f"{name}.check.objects[{k}]"))
    return Value(text.strip(), image, check)


def _prompts(data: Any, name: str, fail, need: bool) -> list[dict[str, str]]:
    if data is None and not need:
        return []
    if not isinstance(data, list) or (need and not data):
        raise fail("must be a non-empty list of {'und': prompt, 'gen': prompt}", name)
    for k, pair in enumerate(data):
        if not isinstance(pair, dict) or not all(
            isinstance(pair.get(d), str) and pair[d] for d in ("und", "gen")
        ):
            raise fail("expected {'und': prompt, 'gen': prompt}", f"{name}[{k}]")
    return [{"und": p["und"], "gen": p["gen"]} for p in data]


def parse_spec(
    data: Any, *, file: str = "<memory>", line: int | None = None, world: World | None = None
) -> EditSpec:
    """One spec from its JSON object. With ``world``, the subject must be one of its realms."""

    def fail(message: str, name: str = "") -> SpecError:
        return SpecError(message, file=file, line=line, field=name)

    if not isinstance(data, dict):
        raise fail("a spec line must be a JSON object")
    for name in ("id", "subject", "relation"):
        if not isinstance(data.get(name), str) or not data[name].strip():
            raise fail("must be a non-empty string", name)
    kind = data.get("kind")
    if kind not in KINDS:
        raise fail(f"must be one of {KINDS}, got {kind!r}", "kind")
    if world is not None:
        try:
            world.realm(data["subject"])
        except KeyError:
            raise fail(
                f"unknown subject {data['subject']!r}: not a realm of world {world.seed}", "subject"
            ) from None
    base = Path(file).parent
    new = _value(data.get("new"), "new", base, fail)
    old = None if data.get("old") is None else _value(data["old"], "old", base, fail)
    if kind == "edit" and old is None:
        raise fail("an edit replaces a value: give the old one", "old")
    train = data.get("train")
    if not isinstance(train, dict) or not any(train.get(d) for d in ("und", "gen")):
        raise fail("must map 'und' and/or 'gen' to lists of prompts", "train")
    for d in ("und", "gen"):
        if not isinstance(train.get(d, []), list) or not all(
            isinstance(p, str) and p for p in train.get(d, [])
        ):
            raise fail("must be a list of prompt strings", f"train.{d}")
    aliases = data.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
        raise fail("must be a list of strings", "aliases")
    group = data.get("group", "")
    if not isinstance(group, str):
        raise fail("must be a string", "group")
    return EditSpec(
        id=data["id"],
        kind=kind,
        subject=data["subject"],
        relation=data["relation"],
        new=new,
        old=old,
        train={d: list(train.get(d, [])) for d in ("und", "gen")},
        targets=_prompts(data.get("targets"), "targets", fail, need=True),
        generality=_prompts(data.get("generality"), "generality", fail, need=False),
        aliases=list(aliases),
        group=group,
    )


def load_specs(path: str | Path, world: World | None = None) -> list[EditSpec]:
    """Every spec of a JSONL file; the first bad line raises :class:`SpecError` naming file, line and field."""
    path = Path(path)
    specs, seen = [], set()

    def malformed(path: Path, number: int, problem: str) -> SpecError:
        return SpecError(f"malformed JSON: {problem}", file=str(path), line=number)

    for number, data in numbered_jsonl(path, error=malformed, objects_only=False):
        spec = parse_spec(data, file=str(path), line=number, world=world)
        if spec.id in seen:
            raise SpecError(f"duplicate id {spec.id!r}", file=str(path), line=number, field="id")
        seen.add(spec.id)
        specs.append(spec)
    if not specs:
        raise SpecError("no specs", file=str(path))
    return specs


# --- the synth world -------------------------------------------------------------------------------------


def _emblem_value(obj: Obj, cell: tuple[int, int]) -> dict[str, Any]:
    scene = Scene({cell: obj})
    return {
        "text": scene.describe(),
        "scene": scene.to_json(),
        "check": {"type": "objects", "objects": [[obj.shape, obj.colour]]},
    }


GROUPS = {
    True: "known entity",
    False: "unseen entity",
}  # inject specs: reserve realm taught by name, or never


def spec_realms(world: World, kind: str) -> list:
    """The realms ``kind`` specs are drawn from: existing realms for an edit, reserve realms for an inject."""
    return list(world.realms) if kind == "edit" else world.reserve_known + world.reserve_unseen


def synth_spec_data(world: World, kind: str, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` random specs over the synth world, as JSON objects (what a spec file holds).

    ``edit``: existing realms get a new emblem (another shape or colour, same cell). ``inject``: reserve realms
    (known by name, or unseen: the spec's ``group``) get the emblem the world planned for them. Training uses all one-hop phrasings
    but one; targets are those training prompts (efficacy), generality the held-out one-hop phrasing and the
    two-hop route through the founder in every phrasing.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    rng = random.Random(f"edit-specs-{seed}-{kind}")
    pool = spec_realms(world, kind)
    if not 1 <= n <= len(pool):
        raise ValueError(f"--edits must be in [1, {len(pool)}] for {kind} specs (one realm each), got {n}")
    kinds = [Obj(s, c) for s in SHAPES for c in COLOURS]
    out = []
    for k, realm in enumerate(rng.sample(pool, n)):
        held = rng.randrange(len(WK_UND))
        kept = [p for p in range(len(WK_UND)) if p != held]
        one_hop = {p: world_knowledge_prompts(realm, "one_hop", p) for p in range(len(WK_UND))}
        two_hop = [world_knowledge_prompts(realm, "two_hop", p) for p in range(len(WK_UND))]
        new = rng.choice([o for o in kinds if o != realm.emblem]) if kind == "edit" else realm.emblem
        out.append(
            {
                "id": f"{kind}-{k:03d}",
                "kind": kind,
                "subject": realm.name,
                "relation": "emblem",
                "aliases": [WK_SUBJECT["two_hop"].format(founder=realm.founder)],
                "new": _emblem_value(new, realm.emblem_cell),
                "old": _emblem_value(realm.emblem, realm.emblem_cell) if kind == "edit" else None,
                "train": {"und": [one_hop[p][0] for p in kept], "gen": [one_hop[p][1] for p in kept]},
                "targets": [{"und": one_hop[p][0], "gen": one_hop[p][1]} for p in kept],
                "generality": [{"und": one_hop[held][0], "gen": one_hop[held][1]}]
                + [{"und": u, "gen": g} for u, g in two_hop],
                **({"group": GROUPS[realm in world.reserve_known]} if kind == "inject" else {}),
            }
        )
    return out


def synth_specs(world: World, kind: str, n: int, seed: int = 0) -> list[EditSpec]:
    return [
        parse_spec(d, file=f"synth:{kind}", line=k + 1, world=world)
        for k, d in enumerate(synth_spec_data(world, kind, n, seed))
    ]


def write_specs(data: Sequence[dict[str, Any]], path: str | Path) -> None:
    Path(path).write_text("".join(json.dumps(d) + "\n" for d in data), encoding="utf-8")


def _realm(item: Item | dict) -> str | None:
    meta = item.get("meta") if isinstance(item, dict) else item.meta
    return (meta or {}).get("realm")


def _mentions_any(specs: Sequence[EditSpec], item: Item | dict) -> bool:
    get = item.get if isinstance(item, dict) else lambda k: getattr(item, k)
    return any(s.mentions(get("und_prompt")) or s.mentions(get("gen_prompt")) for s in specs)


def locality_items(
    specs: Sequence[EditSpec],
    pool: Sequence[Item],
    n_world: int = 48,
    n_other: int = 8,
    realms: Collection[str] | None = None,
) -> list[Item]:
    """A fixed locality slice: the first ``n_world`` world-knowledge items of ``pool`` that mention no edited
    subject (and, given ``realms``, are about one of them: the held-out side of :func:`split_realms`), and the
    first ``n_other`` items of each other category (pool order, so every condition and every run asks the
    same ones)."""
    out: list[Item] = []
    taken: dict[str, int] = {}
    for item in pool:
        if _mentions_any(specs, item):
            continue
        if realms is not None and item.category == "world_knowledge" and _realm(item) not in realms:
            continue
        cap = n_world if item.category == "world_knowledge" else n_other
        if taken.get(item.category, 0) < cap:
            taken[item.category] = taken.get(item.category, 0) + 1
            out.append(item)
    return out


def retain_items(
    world: World,
    specs: Sequence[EditSpec],
    exclude: Sequence[Item],
    n_world: int = 32,
    n_other: int = 16,
    seed: int = 0,
    realms: Collection[str] | None = None,
) -> list[Item]:
    """Items an editor may rehearse to keep the rest of the model as it was: world-knowledge questions about
    unedited realms (given ``realms``, only those: the retain side of :func:`split_realms`) in phrasings the
    suite does not use, and fresh items of the other categories — none the same question as an ``exclude``
    item (the locality items stay held out) or mentioning an edited subject."""
    rng = random.Random(f"edit-retain-{seed}")
    taken = {item_key(i) for i in exclude}
    world_pool = [
        (realm, hop, p)
        for realm in world.realms
        if realms is None or realm.name in realms
        for hop in WK_SUBJECT
        for p in range(len(WK_UND))
        if p != suite_phrasing(world, realm, hop)
    ]
    rng.shuffle(world_pool)
    fields = [make_world_knowledge(world, rng, realm, hop, p) for realm, hop, p in world_pool]
    others = [c for c in GENERATORS if c != "world_knowledge"]
    fields += [GENERATORS[others[k % len(others)]](world, rng) for k in range(3 * n_other)]
    out: list[Item] = []
    counts: dict[str, int] = {}
    for f in fields:
        cap = n_world if f["category"] == "world_knowledge" else n_other
        mentioned = _mentions_any(specs, f)
        if counts.get(f["category"], 0) >= cap or mentioned or item_key(f) in taken:
            continue
        counts[f["category"]] = counts.get(f["category"], 0) + 1
        out.append(Item(id=f"retain-{len(out):04d}", **f))
    return out


# --- held-out locality -----------------------------------------------------------------------------------


def split_realms(
    world: World, specs: Sequence[EditSpec], seed: int = 0, fraction: float = 0.5
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The unedited realms, split once (seeded) into a retain side and a locality side.

    Why: an editor that rehearses a realm's facts (LoRA's KL items, locate's kept keys and key statistics)
    is judged on other realms only, so locality measures what the edit did to facts it never saw."""
    edited = {s.subject for s in specs}
    names = sorted(
        r.name for r in world.realms if r.name not in edited and not any(s.mentions(r.name) for s in specs)
    )
    random.Random(f"edit-split-{seed}").shuffle(names)
    cut = round(len(names) * (1 - fraction))
    return tuple(sorted(names[:cut])), tuple(sorted(names[cut:]))


@dataclass(frozen=True)
class HeldOut:
    """What an edit experiment may train on and what it judges locality with, split by realm.

    ``retain`` (rehearsal / kept keys) and ``corpus`` (key statistics) come from the retain side only;
    ``locality`` items from the locality side and from categories that name no realm (never in ``retain``
    or ``corpus`` as the same question); ``controls`` are locality-side realms whose names stand in for
    the edited subject to measure a subject-nonspecific log-probability shift."""

    retain_realms: tuple[str, ...]
    locality_realms: tuple[str, ...]
    locality: list[Item]
    retain: list[Item]
    corpus: list[Item]

    @property
    def controls(self) -> tuple[str, ...]:
        return self.locality_realms


def hold_out(
    world: World,
    specs: Sequence[EditSpec],
    pool: Sequence[Item],
    *,
    seed: int = 0,
    n_world: int = 48,
    n_other: int = 8,
) -> HeldOut:
    """The retain / locality split of :func:`split_realms` and the items each side gives an experiment."""
    keep, held = split_realms(world, specs, seed)
    local = locality_items(specs, pool, n_world, n_other, realms=held)
    shown = {item_key(i) for i in local}
    corpus = [
        i
        for i in pool
        if item_key(i) not in shown
        and not _mentions_any(specs, i)
        and (i.category != "world_knowledge" or _realm(i) in keep)
    ]
    retain = retain_items(world, specs, local, n_world=64, n_other=32, seed=seed, realms=keep)
    return HeldOut(keep, held, local, retain, corpus)
