"""A VLM judge: grades free-form text answers and generated images through any OpenAI-compatible endpoint.

Items without a machine-checkable ``spec`` need a strong multimodal model to grade them, as in the paper. This
client speaks plain ``POST {base_url}/chat/completions`` with the standard library, so it works against a local
vLLM server or a hosted API alike. Every failure (network, HTTP, an unreadable reply) becomes a Verdict with
``correct=None`` and an ``error``: a judge failure must never be counted as a wrong answer. The API key lives
only in request headers: it is kept out of repr, logs, error messages, the cache and results.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import yaml
from PIL import Image
from tqdm import tqdm

from gapeval.items import CATEGORIES, DIRECTIONS, Item
from gapeval.judges.base import Verdict
from gapeval.judges.cache import VerdictCache, cache_key, default_cache_dir

logger = logging.getLogger(__name__)

ENV_BASE_URL = "GAPEVAL_JUDGE_BASE_URL"
ENV_MODEL = "GAPEVAL_JUDGE_MODEL"
ENV_API_KEY = "GAPEVAL_JUDGE_API_KEY"
RUBRICS_PATH = Path(__file__).with_name("rubrics") / "gapeval.yaml"

_CASE_FIELDS = {"und": ("question", "reference", "answer"), "gen": ("question", "reference")}
_IMAGE_ROLES = ("input", "reference", "answer")
_SCORE_KEYS = ("score", "judge_result")
_TRUE, _FALSE = {"1", "yes", "true"}, {"0", "no", "false"}
_MAX_DELAY = 60.0
_CONFIG_KEYS = {
    "base_url", "model", "api_key", "api_key_env", "rubrics", "verify", "timeout", "retries", "backoff",
    "concurrency", "cache_dir", "use_cache", "temperature", "max_tokens", "extra_body",
}  # fmt: skip


class JudgeError(RuntimeError):
    """Judging failed (network, HTTP, unreadable reply); reported as an error verdict, never as a wrong answer."""


class RubricError(ValueError):
    """A rubric file breaks its format; the message names the file and the field."""

    def __init__(self, message: str, path: Path, field: str | None = None):
        where = f"{path}" + (f", field {field}" if field else "")
        super().__init__(f"{message} ({where})")


class _Transient(Exception):
    """A failure worth retrying: timeout, connection error, HTTP 429 or 5xx."""

    def __init__(self, message: str, retry_after: str | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class _Secret:
    """Holds the API key so that repr, vars() dumps and tracebacks show ``***`` instead."""

    __slots__ = ("_value",)

    def __init__(self, value: str | None):
        self._value = value or None

    def reveal(self) -> str | None:
        return self._value

    def __repr__(self) -> str:
        return "'***'" if self._value else "None"


# --- rubrics -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rubrics:
    """The judge's instructions: shared system text, criteria per (category, direction), case templates."""

    name: str
    version: str
    system: str
    verify: str
    cases: dict[str, Template]
    image_labels: dict[str, str]
    criteria: dict[str, dict[str, str]]
    path: Path

    @property
    def id(self) -> str:
        return f"{self.name}-v{self.version}"

    def system_prompt(self, category: str, direction: str) -> str:
        return f"{self.system}\n\n{self.criteria[category][direction]}"

    def case(self, direction: str, **fields: str) -> str:
        """Fill the case template; substituted values are inserted literally (string.Template never evaluates)."""
        return self.cases[direction].substitute(fields)


def load_rubrics(path: str | os.PathLike[str] | None = None) -> Rubrics:
    """Load and check a rubric file (yaml.safe_load); defaults to the packaged ``rubrics/gapeval.yaml``."""
    path = Path(path) if path is not None else RUBRICS_PATH
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RubricError(f"cannot read rubrics: {exc}", path) from exc

    def text(*keys: str) -> str:
        value: Any = data
        for depth, key in enumerate(keys):
            if not isinstance(value, dict) or key not in value:
                raise RubricError("missing entry", path, ".".join(keys[: depth + 1]))
            value = value[key]
        if not isinstance(value, str) or not value.strip():
            raise RubricError(f"must be a non-empty string, got {value!r}", path, ".".join(keys))
        return value

    name = text("name")
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, (int, str)) or not str(version).strip():
        raise RubricError(f"must be an integer or a non-empty string, got {version!r}", path, "version")
    cases = {}
    for direction, fields in _CASE_FIELDS.items():
        template = Template(text("cases", direction))
        try:
            template.substitute(dict.fromkeys(fields, ""))
        except KeyError as exc:
            allowed = ", ".join(f"${f}" for f in fields)
            raise RubricError(
                f"unknown placeholder ${exc.args[0]}; allowed: {allowed}", path, f"cases.{direction}"
            ) from None
        except ValueError as exc:
            raise RubricError(
                f"bad placeholder ({exc}); write $$ for a dollar sign", path, f"cases.{direction}"
            ) from None
        cases[direction] = template
    return Rubrics(
        name=name,
        version=str(version),
        system=text("system"),
        verify=text("verify"),
        cases=cases,
        image_labels={role: text("image_labels", role) for role in _IMAGE_ROLES},
        criteria={c: {d: text("criteria", c, d) for d in DIRECTIONS} for c in CATEGORIES},
        path=path,
    )


# --- building requests and reading replies -------------------------------------------------------------------


def answer_direction(answer: object) -> str:
    """A text answer is understanding, an image answer is generation."""
    if isinstance(answer, str):
        return "und"
    if isinstance(answer, Image.Image):
        return "gen"
    raise TypeError(f"answer must be a str (und) or a PIL image (gen), got {type(answer).__name__}")


def image_data_url(image: Image.Image) -> str:
    """PNG bytes as a base64 data URL, the form OpenAI-compatible servers accept in ``image_url`` parts."""
    if image.mode not in ("1", "L", "LA", "P", "RGB", "RGBA"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def build_messages(rubrics: Rubrics, item: Item, answer: str | Image.Image) -> list[dict[str, Any]]:
    """The first-turn chat messages for one answer. Text answers go as text; image answers as one user turn
    holding the case text and the labelled input, reference and generated images."""
    direction = answer_direction(answer)
    system = {"role": "system", "content": rubrics.system_prompt(item.category, direction)}
    reference = "\n".join(f"- {r}" for r in item.reference)
    if direction == "und":
        if not reference:
            raise JudgeError(f"item {item.id} has no text reference to judge an und answer against")
        text = rubrics.case("und", question=item.und_prompt, reference=reference, answer=answer)
        return [system, {"role": "user", "content": text}]
    if not reference and item.reference_image is None:
        raise JudgeError(f"item {item.id} has neither a text reference nor a reference image")
    reference = reference or "(none in words; see the reference image)"
    parts: list[dict[str, Any]] = [
        {"type": "text", "text": rubrics.case("gen", question=item.gen_prompt, reference=reference)}
    ]
    for role, image in zip(_IMAGE_ROLES, (item.image, item.reference_image, answer), strict=True):
        if image is not None:
            parts.append({"type": "text", "text": rubrics.image_labels[role]})
            parts.append({"type": "image_url", "image_url": {"url": image_data_url(image)}})
    return [system, {"role": "user", "content": parts}]


def _snippet(text: str | bytes, limit: int = 200) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _as_score(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        return True if word in _TRUE else False if word in _FALSE else None
    return None


def parse_verdict(reply: str) -> tuple[bool, str]:
    """Read ``(correct, reason)`` from a judge reply.

    Accepts a JSON object anywhere in the reply (bare, inside ```json fences, or amid prose) whose ``score`` or
    ``judge_result`` is 0/1, true/false, "yes"/"no" or "1"/"0". Raises JudgeError when there is no such object,
    when its value is anything else, or when the reply holds conflicting verdicts.
    """
    decoder = json.JSONDecoder()
    found: list[tuple[object, dict[str, Any]]] = []
    start = reply.find("{")
    while start != -1:
        resume = start + 1
        try:
            obj, end = decoder.raw_decode(reply, start)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            lowered = {str(k).lower(): v for k, v in obj.items()}
            key = next((k for k in _SCORE_KEYS if k in lowered), None)
            if key is not None:
                found.append((lowered[key], lowered))
                resume = end
        start = reply.find("{", resume)
    if not found:
        raise JudgeError(
            f"unparseable judge reply: no JSON object with 'score' or 'judge_result': {_snippet(reply)}"
        )
    scores = {_as_score(value) for value, _ in found}
    if None in scores:
        bad = next(value for value, _ in found if _as_score(value) is None)
        raise JudgeError(f"unparseable judge reply: score {bad!r} is not 0/1: {_snippet(reply)}")
    if len(scores) > 1:
        raise JudgeError(f"unparseable judge reply: conflicting verdicts: {_snippet(reply)}")
    reason = found[-1][1].get("reason", "")
    return scores.pop(), reason if isinstance(reason, str) else json.dumps(reason)


def _reply_text(raw: bytes) -> str:
    """The assistant message text of a chat-completions response body."""
    try:
        content = json.loads(raw)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise JudgeError(f"malformed response body: {_snippet(raw)}") from exc
    if isinstance(content, list):  # some servers return content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str) or not content.strip():
        raise JudgeError(f"empty judge reply: {_snippet(raw)}")
    return content


def _endpoint(base_url: str) -> str:
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"judge base_url must be an http(s) URL such as http://127.0.0.1:8000/v1, got {base_url!r}"
        )
    url = base_url.rstrip("/")
    return url if url.endswith("/chat/completions") else f"{url}/chat/completions"


# --- the judge -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Exchange:
    """One answer ready to send: the first-turn payload, its cache key, and whether a self-check turn follows."""

    payload: dict[str, Any]
    key: str
    self_check: bool


class VLMJudge:
    """Judge answers with a multimodal LLM behind an OpenAI-compatible ``/chat/completions`` endpoint.

    ``base_url``, ``model`` and ``api_key`` fall back to ``GAPEVAL_JUDGE_BASE_URL``, ``GAPEVAL_JUDGE_MODEL`` and
    ``GAPEVAL_JUDGE_API_KEY``. ``verify`` asks text verdicts a second time and counts the second (the paper's
    protocol). ``retries`` extra attempts follow timeouts, connection errors and HTTP 429/5xx, waiting
    ``backoff * 2**attempt`` seconds (with jitter, at most 60 s); ``timeout`` bounds each socket read.
    At most ``concurrency`` requests are in flight at once. Verdicts are cached in ``cache_dir`` (default
    :func:`~gapeval.judges.cache.default_cache_dir`); failures are not cached, so re-judging retries them.
    """

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        *,
        rubrics: str | os.PathLike[str] | None = None,
        verify: bool = True,
        timeout: float = 60.0,
        retries: int = 4,
        backoff: float = 1.0,
        concurrency: int = 4,
        cache_dir: str | os.PathLike[str] | None = None,
        use_cache: bool = True,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ):
        base_url = base_url or os.environ.get(ENV_BASE_URL)
        model = model or os.environ.get(ENV_MODEL)
        if not base_url:
            raise ValueError(f"no judge endpoint: pass base_url or set {ENV_BASE_URL}")
        if not model:
            raise ValueError(f"no judge model: pass model or set {ENV_MODEL}")
        if timeout <= 0 or retries < 0 or backoff < 0 or concurrency < 1:
            raise ValueError("judge needs timeout > 0, retries >= 0, backoff >= 0 and concurrency >= 1")
        reserved = {"model", "messages"} & set(extra_body or {})
        if reserved:
            raise ValueError(f"extra_body must not set {sorted(reserved)}: the judge sets them")
        self.base_url, self.model, self.endpoint = base_url, model, _endpoint(base_url)
        self._api_key = _Secret(api_key if api_key is not None else os.environ.get(ENV_API_KEY))
        self.rubrics = load_rubrics(rubrics)
        self.verify, self.timeout, self.retries, self.backoff = verify, timeout, retries, backoff
        self.concurrency = concurrency
        self.params: dict[str, Any] = {
            "temperature": temperature,
            **({"max_tokens": max_tokens} if max_tokens else {}),
        }
        self.params.update(extra_body or {})
        self.cache = (
            VerdictCache(cache_dir if cache_dir is not None else default_cache_dir()) if use_cache else None
        )
        self._slots = threading.BoundedSemaphore(concurrency)
        self._rng = random.Random()  # private, so jitter never disturbs seeded global randomness

    @classmethod
    def from_env(cls, **options: Any) -> VLMJudge | None:
        """The judge configured by environment variables, or None when no endpoint is configured."""
        if not (options.get("base_url") or os.environ.get(ENV_BASE_URL)):
            return None
        return cls(**options)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> VLMJudge:
        """Build from a config mapping (constructor arguments). Prefer ``api_key_env`` (the name of an
        environment variable) over ``api_key`` so config files, which get archived, hold no secret."""
        unknown = set(config) - _CONFIG_KEYS
        if unknown:
            raise ValueError(f"judge config: unknown keys {sorted(unknown)}; allowed: {sorted(_CONFIG_KEYS)}")
        options = dict(config)
        if env_name := options.pop("api_key_env", None):
            if not os.environ.get(env_name):
                raise ValueError(f"judge config: api_key_env names {env_name}, which is not set")
            options["api_key"] = os.environ[env_name]
        return cls(**options)

    @property
    def id(self) -> str:
        return f"vlm:{self.model}:{self.rubrics.id}" + ("" if self.verify else ":single-turn")

    def config(self) -> dict[str, Any]:
        """JSON-serialisable description for run manifests (no API key)."""
        return {
            "judge": self.id,
            "base_url": self.base_url,
            "model": self.model,
            "rubrics": self.rubrics.id,
            "verify": self.verify,
            "params": dict(self.params),
        }

    def __repr__(self) -> str:
        key = "<set>" if self._api_key.reveal() else "<unset>"
        return f"VLMJudge(base_url={self.base_url!r}, model={self.model!r}, id={self.id!r}, api_key={key})"

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()

    def __enter__(self) -> VLMJudge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- judging

    def judge(self, item: Item, answer: str | Image.Image) -> Verdict:
        exchange = self._prepare(item, answer)
        return exchange if isinstance(exchange, Verdict) else self._run(exchange)

    def judge_many(
        self, pairs: Sequence[tuple[Item, str | Image.Image]], *, progress: bool = False
    ) -> list[Verdict]:
        """Judge many answers, at most ``concurrency`` at a time, in order; identical requests are sent once."""
        prepared = [self._prepare(item, answer) for item, answer in pairs]
        unique = {e.key: e for e in prepared if isinstance(e, _Exchange)}
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            results = tqdm(
                pool.map(self._run, unique.values()), total=len(unique), desc="judging", disable=not progress
            )
            done = dict(zip(unique, results, strict=True))
        return [e if isinstance(e, Verdict) else done[e.key] for e in prepared]

    def _prepare(self, item: Item, answer: str | Image.Image) -> _Exchange | Verdict:
        """The first-turn payload and its cache key, or an error verdict if the item cannot be judged."""
        try:
            messages = build_messages(self.rubrics, item, answer)
        except JudgeError as exc:
            return self._error(exc)
        payload = {"model": self.model, "messages": messages, **self.params}
        self_check = self.verify and answer_direction(answer) == "und"
        key = cache_key(
            {
                "judge_model": self.model,
                "rubric": self.rubrics.id,
                "payload": payload,
                "self_check": self.rubrics.verify if self_check else None,
            }
        )
        return _Exchange(payload, key, self_check)

    def _run(self, exchange: _Exchange) -> Verdict:
        if self.cache is not None and (hit := self.cache.get(exchange.key)) is not None:
            return Verdict(correct=hit["correct"], judge=self.id, reason=hit["reason"])
        try:
            correct, reason, replies = self._converse(exchange)
        except JudgeError as exc:
            return self._error(exc)
        if self.cache is not None:
            record = {"correct": correct, "reason": reason, "replies": replies, "judge": self.id}
            self.cache.put(exchange.key, record)
        return Verdict(correct=correct, judge=self.id, reason=reason)

    def _converse(self, exchange: _Exchange) -> tuple[bool, str, list[str]]:
        """One turn, or with self-check a second turn ("are you sure?") whose verdict is the one that counts."""
        first = self._complete(exchange.payload)
        if not exchange.self_check:
            return (*parse_verdict(first), [first])
        messages = exchange.payload["messages"]
        followup = [
            *messages,
            {"role": "assistant", "content": first},
            {"role": "user", "content": self.rubrics.verify},
        ]
        second = self._complete({**exchange.payload, "messages": followup})
        correct, reason = parse_verdict(second)
        try:
            changed = parse_verdict(first)[0] != correct
        except JudgeError:
            changed = False
        return correct, ("[changed on self-check] " if changed else "") + reason, [first, second]

    def _complete(self, payload: dict[str, Any]) -> str:
        """POST with retries on transient failures; returns the reply text or raises JudgeError."""
        body = json.dumps(payload).encode("utf-8")
        attempt = 0
        while True:
            try:
                with self._slots:
                    raw = self._post(body)
                return _reply_text(raw)
            except _Transient as exc:
                failure = self._redact(str(exc))
                if attempt == self.retries:
                    raise JudgeError(
                        f"judge request failed after {attempt + 1} attempts: {failure}"
                    ) from None
                delay = self._delay(attempt, exc.retry_after)
                logger.warning(
                    "judge request failed (%s); retry %d/%d in %.2fs",
                    failure,
                    attempt + 1,
                    self.retries,
                    delay,
                )
                time.sleep(delay)
                attempt += 1

    def _post(self, body: bytes) -> bytes:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "gapeval-judge",
        }
        if key := self._api_key.reveal():
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            try:
                detail = _snippet(exc.read())
            except (OSError, http.client.HTTPException):
                detail = "(no body)"
            if exc.code == 429 or exc.code >= 500:
                raise _Transient(f"HTTP {exc.code}: {detail}", exc.headers.get("Retry-After")) from None
            raise JudgeError(f"HTTP {exc.code} from {self.endpoint}: {detail}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from None

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        delay = min(self.backoff * 2**attempt, _MAX_DELAY) * (1 + 0.25 * self._rng.random())
        try:
            return max(delay, min(float(retry_after), _MAX_DELAY)) if retry_after else delay
        except ValueError:  # an HTTP-date Retry-After: keep our own schedule
            return delay

    def _redact(self, text: str) -> str:
        key = self._api_key.reveal()
        return text.replace(key, "***") if key else text

    def _error(self, exc: Exception) -> Verdict:
        return Verdict(correct=None, judge=self.id, error=self._redact(str(exc)))
