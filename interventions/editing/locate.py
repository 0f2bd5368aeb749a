"""Locate-then-edit (MEMIT's closed form): write new values into the MLP output projections of chosen layers.

1. **Values.** A residual shift ``δ`` at the key positions, added to the output of the value layer, is
   optimised (Adam) until the trained direction produces the new answer; ``z = h + δ`` is what that layer's
   output should be. The value layer is one whose output later layers still read (MEMIT's arrangement): for
   ``subject`` and ``last`` keys a shift there reaches the answer only through a later layer's attention, so
   by default it is the layer below the last, and the edited layers are those up to it.
2. **Keys** are the inputs of each edited layer's ``mlp_out`` at the key site: ``answer`` (every answer
   position — the built-in UMM reads the subject's name again at each one, see
   docs/patching.md), ``last`` (the last prompt token) or ``subject`` (the subject's last
   token, ROME's choice for models that build the subject there).
3. **Update**, layer by layer from the lowest, with keys and residuals re-read after each: the residual still
   missing, ``R = (z − h) / (layers left)``, is written as ``ΔW = R Kᵀ (λ C + K Kᵀ)⁻¹`` (:func:`closed_form_update`), where ``C`` is the
   second moment of ``mlp_out`` inputs over the world's text (prompts and reference answers of many items),
   so keys the edit does not name move as little as possible.

On exit the original weights are copied back (bit-identical). Deltas save as safetensors.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file

from gapeval.items import Item
from gapeval.models.base import ForwardPass, Intervenable, Request
from interventions.editing.editor import (
    Edit,
    Editor,
    TrainingBatch,
    answer_logprobs,
    rehearsal_batches,
    training_batches,
)
from interventions.editing.ranges import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, PROBABILITY, Range
from interventions.hooks import layers as decoder_layers
from interventions.hooks import rewrite

KEY_SITES = ("answer", "last", "subject")


def _weight_path(model: Intervenable, layer: int) -> str:
    return f"{model.layers_path}.{layer}.{model.components['mlp_out']}.weight"


def _mlp_out(model: Intervenable, layer: int) -> torch.nn.Linear:
    return decoder_layers(model)[layer].get_submodule(model.components["mlp_out"])


@contextmanager
def _keys(model: Intervenable, layers: Sequence[int]) -> Iterator[dict[int, list[torch.Tensor]]]:
    """Record the input of ``mlp_out`` at each layer, every forward pass in the block."""
    seen: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    handles = [
        _mlp_out(model, layer).register_forward_pre_hook(
            lambda _m, args, layer=layer: seen[layer].append(args[0])
        )
        for layer in layers
    ]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def _restored(model: Intervenable, layers: Sequence[int]) -> Iterator[dict[int, torch.Tensor]]:
    """Inside, the layers' ``mlp_out`` weights may change; on exit the saved originals are copied back."""
    originals = {layer: _mlp_out(model, layer).weight.detach().clone() for layer in layers}
    try:
        yield originals
    finally:
        with torch.no_grad():
            for layer, weight in originals.items():
                _mlp_out(model, layer).weight.copy_(weight)


def closed_form_update(
    keys: torch.Tensor, residual: torch.Tensor, keep: torch.Tensor | None = None
) -> torch.Tensor:
    """ΔW (d_out × d_in) with ΔW kᵢ ≈ rᵢ for each key row kᵢ of ``keys`` (n × d_in) and residual row rᵢ
    (n × d_out), moving the keys ``keep`` (d_in × d_in: λC plus kept keys' Gram) as little as possible:
    ``ΔW = Rᵀ K (Kᵀ K + keep)⁻¹`` (a 1e-6 ridge makes it solvable when keys span less than d_in)."""
    gram = keys.T @ keys + (0 if keep is None else keep) + 1e-6 * torch.eye(keys.shape[1])
    return torch.linalg.solve(gram.double(), (keys.T @ residual).double()).T.float()


def _answer_positions(fp: ForwardPass) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.arange(len(fp))[:, None].expand_as(fp.answer_positions)
    return rows[fp.answer_mask], fp.answer_positions[fp.answer_mask]


class LocateEdit(Edit):
    suffix = ".safetensors"

    def __init__(self, deltas: dict[str, torch.Tensor], stats: dict[str, Any]):
        self.deltas, self.stats = deltas, stats

    def save(self, path: str | Path) -> None:
        """One safetensors file: ``{weight path: ΔW}``."""
        save_file({k: v.contiguous() for k, v in self.deltas.items()}, str(path))


@dataclass
class LocateEditor(Editor):
    """``corpus`` gives the key covariance (default: none, i.e. plain minimum-norm least squares)."""

    layers: tuple[int, ...] | None = None  # default: every decoder layer up to the value layer
    value_layer: int | None = (
        None  # default: max(layers); without layers the last for "answer", else the one below
    )
    key_site: str = "answer"
    cov_weight: float = 1e3  # λ: how strongly keys of the corpus keep their outputs
    value_steps: int = 100
    value_lr: float = 0.1
    value_target_p: float = 0.99  # stop once every answer token is this likely (a margin for free decoding)
    value_decay: float = 1e-2  # penalty on the mean squared δ relative to the residual's
    corpus: Sequence[Item] = field(default=(), repr=False)
    retain: Sequence[Item] = field(default=(), repr=False)  # answers whose outputs the update must keep
    retain_weight: float = 3.0
    rounds: int = 4  # value optimisation + update, repeated from the edited weights until the values hold
    name: str = "locate"
    RANGES: ClassVar[dict[str, Range]] = {
        "layers": NON_NEGATIVE,
        "value_layer": NON_NEGATIVE,
        "cov_weight": NON_NEGATIVE,
        "value_steps": AT_LEAST_ONE,
        "value_lr": POSITIVE,
        "value_target_p": PROBABILITY,
        "value_decay": NON_NEGATIVE,
        "retain_weight": NON_NEGATIVE,
        "rounds": AT_LEAST_ONE,
    }

    def __post_init__(self) -> None:
        if self.key_site not in KEY_SITES:
            raise ValueError(f"key_site must be one of {KEY_SITES}, got {self.key_site!r}")
        if self.layers is not None and not self.layers:
            raise ValueError("layers must name at least one layer")
        self._cov: dict[tuple[int, int], torch.Tensor] = {}
        self._kept: dict[int, list[TrainingBatch]] = {}

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "layers": "all" if self.layers is None else sorted(self.layers),
            "key_site": self.key_site,
            "value_layer": "default" if self.value_layer is None else self.value_layer,
            "cov_weight": self.cov_weight,
            "value_steps": self.value_steps,
            "value_lr": self.value_lr,
            "value_target_p": self.value_target_p,
            "value_decay": self.value_decay,
            "corpus": sorted(item.id for item in self.corpus),
            "retain": sorted(item.id for item in self.retain),
            "retain_weight": self.retain_weight,
            "rounds": self.rounds,
        }

    def _value_layer(self, model: Intervenable) -> int:
        """Where the value is optimised: ``value_layer``; else the highest of ``layers`` when given; else the
        last layer for ``answer`` keys (each answer position's own residual feeds its logit) and the one below
        for ``last`` and ``subject`` (a later layer must still read the shift from that position)."""
        n_layers = len(decoder_layers(model))
        layer = self.value_layer
        if layer is None and self.layers:
            layer = max(self.layers)
        if layer is None:
            layer = n_layers - 1 if self.key_site == "answer" or n_layers == 1 else n_layers - 2
        if not 0 <= layer < n_layers:
            raise ValueError(f"value_layer {layer} out of range: the model has {n_layers} layers")
        return layer

    def _layers(self, model: Intervenable) -> tuple[int, ...]:
        """The edited layers: ``layers``, else every layer up to the value layer (none above it: an update
        there would come after the value it is meant to produce)."""
        n_layers, top = len(decoder_layers(model)), self._value_layer(model)
        layers = tuple(range(top + 1)) if self.layers is None else tuple(sorted(self.layers))
        if not all(0 <= layer < n_layers for layer in layers):
            raise ValueError(f"layers {layers} out of range: the model has {n_layers}")
        if layers[-1] > top:
            raise ValueError(
                f"layers {layers} end above value_layer {top}: edited layers must be at or below it"
            )
        return layers

    # --- where the keys are ----------------------------------------------------------------------------------

    def _positions(self, model: Intervenable, batch: TrainingBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, columns) of the key positions of a batch."""
        fp = batch.fp
        if self.key_site == "answer":
            return _answer_positions(fp)
        if self.key_site == "last":
            return torch.arange(len(fp)), fp.prompt_end
        cols = [
            fp.columns(row, [model.span_positions(req, subject, batch.direction)[-1]])[0]
            for row, (req, subject) in enumerate(zip(batch.requests, batch.subjects, strict=True))
        ]
        return torch.arange(len(fp)), torch.tensor(cols)

    def prepare(self, model: Intervenable) -> None:
        if self.corpus:
            self.covariance(model, self._layers(model)[0])
        self._kept_batches(model)

    def _kept_batches(self, model: Intervenable) -> list[TrainingBatch]:
        """The unedited model's own answers to ``retain``: their keys join the least squares with a zero
        residual, so the update leaves those outputs where they were (asked once per model)."""
        if id(model.module) not in self._kept:
            rounds = (
                rehearsal_batches(model, self.retain, rows=max(1, len(self.retain))) if self.retain else []
            )
            self._kept[id(model.module)] = [b for batch in rounds[:1] for b in batch]
        return self._kept[id(model.module)]

    # --- the key covariance of the world's text --------------------------------------------------------------

    def _corpus_passes(self, model: Intervenable) -> Iterator[ForwardPass]:
        for direction, usable in (
            ("und", lambda i: bool(i.reference)),
            ("gen", lambda i: i.reference_image is not None),
        ):
            items = [i for i in self.corpus if usable(i)]
            for start in range(0, len(items), 32):
                chunk = items[start : start + 32]
                answers = [i.reference[0] if direction == "und" else i.reference_image for i in chunk]
                requests = [Request(i.id, i.prompt(direction), i.image) for i in chunk]
                yield model.forward_inputs(requests, direction, answers)

    def covariance(self, model: Intervenable, layer: int) -> torch.Tensor:
        """Second moment E[k kᵀ] of ``mlp_out`` inputs over every real token of the corpus (cached per model)."""
        if (id(model.module), layer) not in self._cov:
            sums: dict[int, torch.Tensor] = {}
            count = 0
            layers = self._layers(model)
            with torch.no_grad(), _keys(model, layers) as seen:
                for fp in self._corpus_passes(model):
                    model.module(*fp.args, **fp.kwargs)
                    width = seen[layers[0]][-1].shape[1]
                    real = torch.arange(width)[None, :] >= fp.offsets[:, None]
                    for lay in layers:
                        k = seen[lay].pop()[real].double()
                        sums[lay] = sums.get(lay, 0) + k.T @ k
                    count += int(real.sum())
            if not count:
                raise ValueError("the corpus has no item with a reference answer to read keys from")
            self._cov |= {(id(model.module), lay): (total / count).float() for lay, total in sums.items()}
        return self._cov[(id(model.module), layer)]

    # --- the edit --------------------------------------------------------------------------------------------

    def _read(
        self, model: Intervenable, batches, positions, layer: int, last: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys at ``layer`` and residuals after the last edited layer, at every key position (current weights)."""
        keys, resid = [], []
        with torch.no_grad(), _keys(model, [layer]) as seen:
            for batch, (rows, cols) in zip(batches, positions, strict=True):
                captured: list[torch.Tensor] = []
                with rewrite(model, last, "resid_post", lambda h, c=captured: c.append(h)):
                    model.module(*batch.fp.args, **batch.fp.kwargs)
                keys.append(seen[layer].pop()[rows, cols])
                resid.append(captured[-1][rows, cols])
        return torch.cat(keys), torch.cat(resid)

    def _values(
        self, model: Intervenable, batches, positions, last: int
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Optimise δ per key position so the trained direction gives the new answer; return z = h + δ."""
        _, h = self._read(model, batches, positions, last, last)
        scale = h.pow(2).mean().sqrt()  # δ = scale · u: the learning rate is relative to the residual's size
        u = torch.zeros_like(h, requires_grad=True)
        optimiser = torch.optim.Adam([u], lr=self.value_lr)
        sizes = [len(rows) for rows, _ in positions]
        steps, worst = 0, 0.0
        with torch.enable_grad():
            while True:
                nll, count, worst = 0.0, 0, 1.0
                for batch, (rows, cols), part in zip(
                    batches, positions, (scale * u).split(sizes), strict=True
                ):

                    def shift(t: torch.Tensor, rows=rows, cols=cols, part=part) -> torch.Tensor:
                        return t.index_put((rows, cols), t[rows, cols] + part)

                    with rewrite(model, last, "resid_post", shift):
                        values = answer_logprobs(model, batch.fp)
                    mask = batch.fp.answer_mask
                    nll = nll - values[mask].sum()
                    count += int(mask.sum())
                    worst = min(worst, float(values[mask].detach().exp().min()))
                if worst > self.value_target_p or steps >= self.value_steps:
                    break
                loss = nll / count + self.value_decay * u.pow(2).mean()
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                steps += 1
        return (h + scale * u).detach(), {"value_steps": steps, "value_worst_token_p": worst}

    @contextmanager
    def apply(self, model: Intervenable, specs: Sequence, via: str) -> Iterator[LocateEdit]:
        layers, top = self._layers(model), self._value_layer(model)
        start = time.perf_counter()
        batches = training_batches(model, specs, via)
        positions = [self._positions(model, b) for b in batches]
        covs = {layer: self.covariance(model, layer) if self.corpus else None for layer in layers}
        kept = self._kept_batches(model)
        with _restored(model, layers) as originals:
            rounds = 0
            for _ in range(self.rounds):
                z, stats = self._values(model, batches, positions, top)
                if rounds and not stats["value_steps"]:
                    break  # the edited model already gives every new answer at the target probability
                rounds += 1
                for i, layer in enumerate(layers):
                    keys, h = self._read(model, batches, positions, layer, top)
                    residual = (z - h) / (len(layers) - i)
                    keep = torch.zeros(keys.shape[1], keys.shape[1])
                    if covs[layer] is not None:
                        keep = keep + self.cov_weight * covs[layer]
                    if kept:
                        held, _ = self._read(model, kept, [_answer_positions(b.fp) for b in kept], layer, top)
                        keep = keep + self.retain_weight * held.T @ held
                    update = closed_form_update(keys, residual, keep)
                    with torch.no_grad():
                        _mlp_out(model, layer).weight.add_(update)
            stats["rounds"] = rounds
            deltas = {
                # float64: original + delta gives back the edited float32 weights exactly when loaded
                _weight_path(model, layer): _mlp_out(model, layer).weight.detach().double()
                - originals[layer].double()
                for layer in layers
            }
            stats |= {"keys": int(z.shape[0]), "seconds": time.perf_counter() - start}
            yield LocateEdit(deltas, stats)

    @contextmanager
    def load(self, model: Intervenable, path: str | Path) -> Iterator[None]:
        """Add saved deltas inside the block; restore the original weights on exit."""
        deltas = load_file(str(path))
        prefix, suffix = f"{model.layers_path}.", f".{model.components['mlp_out']}.weight"
        layers = [int(name.removeprefix(prefix).removesuffix(suffix)) for name in deltas]
        with _restored(model, layers), torch.no_grad():
            for layer, delta in zip(layers, deltas.values(), strict=True):
                weight = _mlp_out(model, layer).weight
                weight.copy_((weight.double() + delta.double()).to(weight.dtype))
            yield
