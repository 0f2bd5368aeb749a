"""The VLM judge against a real OpenAI-compatible HTTP server on loopback, scripted per test."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from gapeval.items import CATEGORIES, DIRECTIONS, Item
from gapeval.judges.vlm import JudgeError, RubricError, VLMJudge, build_messages, load_rubrics, parse_verdict

KEY = "sk-test-7f3a9c-do-not-leak"
MODEL = "judge-model"

# A script maps (request body, request index) to (HTTP status, response body, seconds to hold the reply).
Script = Callable[[dict, int], tuple[int, str, float]]


def chat(content: str) -> str:
    return json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})


def verdict_json(score: object, reason: str = "checked") -> str:
    return json.dumps({"reason": reason, "score": score})


def always(content: str) -> Script:
    return lambda body, n: (200, chat(content), 0.0)


class FakeServer:
    """Records every request, its headers and the most requests ever in flight at once."""

    def __init__(self, script: Script, gate: int = 0):
        self.script, self.gate = script, gate
        self.requests: list[dict] = []
        self.headers: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.in_flight = self.max_in_flight = 0
        self.cond = threading.Condition()
        self.release = threading.Event()  # set at teardown so held replies end at once
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.handle_error = lambda request, address: None  # client gave up (timeout test): not an error
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.cond:
                    index = len(server.requests)
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                    server.paths.append(self.path)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    server.cond.notify_all()
                    if server.gate:  # hold until `gate` requests are in flight together (bounded wait)
                        server.cond.wait_for(lambda: server.in_flight >= server.gate, timeout=0.5)
                try:
                    status, reply, hold = server.script(body, index)
                    server.release.wait(hold or (0.02 if server.gate else 0))
                    payload = reply.encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                finally:
                    with server.cond:
                        server.in_flight -= 1

        return Handler

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def serve(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    servers: list[FakeServer] = []

    def start(script: Script, gate: int = 0) -> FakeServer:
        servers.append(FakeServer(script, gate))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def make_judge(tmp_path):
    judges: list[VLMJudge] = []

    def make(server: FakeServer, **options) -> VLMJudge:
        options = {"api_key": KEY, "cache_dir": tmp_path / "cache", "backoff": 0.001, "timeout": 5, **options}
        judges.append(VLMJudge(server.url, MODEL, **options))
        return judges[-1]

    yield make
    for judge in judges:
        judge.close()


def solid(colour: tuple[int, int, int], size: int = 8) -> Image.Image:
    return Image.new("RGB", (size, size), colour)


def text_item(category: str = "world_knowledge", **fields) -> Item:
    base = {
        "id": "wk-1",
        "category": category,
        "subcategory": "multi-hop",
        "und_prompt": "Which harvest-festival wrestling sport is described?",
        "gen_prompt": "Draw this activity.",
        "reference": ["Ssireum"],
    }
    return Item(**{**base, **fields})


def image_item() -> Item:
    return Item(
        id="if-1",
        category="instruction_following",
        subcategory="draw",
        und_prompt="Describe the vase after a hammer hits it.",
        gen_prompt="Draw the vase after a hammer hits it.",
        image=solid((200, 0, 0)),
        reference=["broken into pieces"],
        reference_image=solid((0, 200, 0)),
    )


def decode_data_url(url: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :]))).convert("RGB")


# --- verdict parsing (pure) -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"reason": "same entity", "score": 1}', True),
        ('{"reason": "wrong count", "score": 0}', False),
        ('```json\n{"reason": "ok", "score": 1}\n```', True),
        ('I compared them.\n```\n{"score": 0, "reason": "no"}\n```\nThat is final.', False),
        ('Verdict follows {"judge_result": "yes", "reason": "r"} end', True),
        ('{"Score": "No", "reason": "r"}', False),
        ('{"score": true}', True),
        ('{"score": "0"}', False),
        ('{"score": 1.0}', True),
        ('{"result": {"score": 1, "reason": "nested"}}', True),
        ('{"score": 1, "reason": "a"} and again {"score": 1, "reason": "b"}', True),
    ],
)
def test_parse_verdict_accepts_common_reply_forms(reply, expected):
    assert parse_verdict(reply)[0] is expected


@pytest.mark.parametrize(
    "reply",
    [
        "The answer is correct.",
        '{"reason": "no score here"}',
        '{"score": 2}',
        '{"score": "maybe"}',
        '{"score": null}',
        "{'score': 1}",
        '{"score": 1} on reflection {"score": 0}',
        '{"reason": "r", "score": 0|1}',
    ],
)
def test_parse_verdict_rejects_anything_else(reply):
    with pytest.raises(JudgeError, match="unparseable judge reply"):
        parse_verdict(reply)


# --- talking to the server ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (verdict_json(1, "names Ssireum"), True),
        (verdict_json(0, "names sumo"), False),
        ("```json\n" + verdict_json(0, "fenced") + "\n```", False),
        ('Looking at it:\n{"judge_result": "yes", "reason": "prose around"}\nDone.', True),
    ],
)
def test_text_verdicts_and_request_shape(serve, make_judge, content, expected):
    server = serve(always(content))
    judge = make_judge(server, verify=False)
    verdict = judge.judge(text_item(), "It is Ssireum, Korean wrestling.")
    assert verdict.correct is expected and verdict.error is None
    assert verdict.judge == judge.id == f"vlm:{MODEL}:gapeval-v1:single-turn"
    assert verdict.reason in content
    (body,) = server.requests
    assert server.paths == ["/v1/chat/completions"]
    assert server.headers[0]["Authorization"] == f"Bearer {KEY}"
    assert body["model"] == MODEL and body["temperature"] == 0.0
    system, user = body["messages"]
    assert system["role"] == "system" and "Category: world knowledge, text answer" in system["content"]
    for text in ("harvest-festival wrestling", "- Ssireum", "It is Ssireum, Korean wrestling."):
        assert text in user["content"]


def test_self_verification_second_verdict_counts(serve, make_judge):
    server = serve(lambda body, n: (200, chat(verdict_json(1 if n == 0 else 0, f"turn {n}")), 0.0))
    judge = make_judge(server)
    verdict = judge.judge(text_item(), "Sumo")
    assert verdict.correct is False
    assert verdict.reason == "[changed on self-check] turn 1"
    assert judge.id == f"vlm:{MODEL}:gapeval-v1"
    first, second = server.requests
    assert second["messages"][:2] == first["messages"]
    assert second["messages"][2] == {"role": "assistant", "content": verdict_json(1, "turn 0")}
    assert second["messages"][3] == {"role": "user", "content": judge.rubrics.verify}


def test_image_answer_sends_labelled_images_in_one_call(serve, make_judge):
    server = serve(always(verdict_json(1, "shards shown")))
    judge = make_judge(server)  # verify=True applies to text answers only
    item, answer = image_item(), solid((0, 0, 200))
    verdict = judge.judge(item, answer)
    assert verdict.correct is True
    (body,) = server.requests
    system, user = body["messages"]
    assert "Category: instruction following, image answer" in system["content"]
    parts = user["content"]
    assert parts[0]["type"] == "text" and "Draw the vase" in parts[0]["text"]
    images = [decode_data_url(p["image_url"]["url"]) for p in parts if p["type"] == "image_url"]
    assert [im.getpixel((0, 0)) for im in images] == [(200, 0, 0), (0, 200, 0), (0, 0, 200)]
    labels = [p["text"] for p in parts[1:] if p["type"] == "text"]
    assert labels == [judge.rubrics.image_labels[r] for r in ("input", "reference", "answer")]


def test_text_to_image_item_attaches_only_reference_and_answer(serve, make_judge):
    server = serve(always(verdict_json(0, "generic scene")))
    judge = make_judge(server)
    item = text_item(reference_image=solid((9, 9, 9)))
    assert judge.judge(item, solid((1, 2, 3))).correct is False
    parts = server.requests[0]["messages"][1]["content"]
    assert sum(p["type"] == "image_url" for p in parts) == 2


def test_timeout_is_retried_then_reported_as_error(serve, make_judge):
    server = serve(lambda body, n: (200, chat(verdict_json(1)), 3.0))
    judge = make_judge(server, timeout=0.2, retries=1, verify=False)
    verdict = judge.judge(text_item(), "Ssireum")
    assert verdict.correct is None
    assert "timed out" in verdict.error and "2 attempts" in verdict.error
    assert len(server.requests) == 2


@pytest.mark.parametrize("status", [500, 503, 429])
def test_transient_http_error_then_success(serve, make_judge, status):
    server = serve(
        lambda body, n: (status, '{"error": "busy"}', 0.0) if n == 0 else (200, chat(verdict_json(1)), 0.0)
    )
    verdict = make_judge(server, verify=False).judge(text_item(), "Ssireum")
    assert verdict.correct is True and verdict.error is None
    assert len(server.requests) == 2


def test_persistent_500_is_an_error_and_not_cached(serve, make_judge):
    broken = True
    server = serve(lambda body, n: (500, "oops", 0.0) if broken else (200, chat(verdict_json(1)), 0.0))
    judge = make_judge(server, retries=3, verify=False)
    verdict = judge.judge(text_item(), "Ssireum")
    assert verdict.correct is None and "HTTP 500" in verdict.error and "4 attempts" in verdict.error
    assert len(server.requests) == 4
    broken = False
    assert judge.judge(text_item(), "Ssireum").correct is True
    assert len(server.requests) == 5


def test_client_error_is_not_retried_and_key_is_redacted(serve, make_judge):
    server = serve(lambda body, n: (401, json.dumps({"error": f"invalid key {KEY}"}), 0.0))
    verdict = make_judge(server, retries=3).judge(text_item(), "Ssireum")
    assert verdict.correct is None and "HTTP 401" in verdict.error
    assert KEY not in verdict.error and "***" in verdict.error
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "body",
    [
        "<html>gateway</html>",
        '{"choices": []}',
        '{"choices": [{"message": {"content": null}}]}',
        chat("The answer looks right to me."),
        chat('{"reason": "x", "score": 2}'),
        chat('{"score": 1} but actually {"score": 0}'),
    ],
)
def test_malformed_reply_is_an_error_verdict(serve, make_judge, body):
    server = serve(lambda request, n: (200, body, 0.0))
    judge = make_judge(server, verify=False)
    verdict = judge.judge(text_item(), "Ssireum")
    assert verdict.correct is None and verdict.error
    assert len(server.requests) == 1
    assert len(judge.cache) == 0


def test_cache_hit_makes_no_requests_across_instances(serve, make_judge):
    server = serve(always(verdict_json(1, "cached reason")))
    first = make_judge(server).judge(text_item(), "Ssireum")
    assert len(server.requests) == 2  # answer + self-check
    again = make_judge(server).judge(text_item(), "Ssireum")
    assert again == first and len(server.requests) == 2
    make_judge(server).judge(text_item(), "Sumo")  # a different answer is a different key
    assert len(server.requests) == 4
    make_judge(server, verify=False).judge(text_item(), "Ssireum")  # a different protocol too
    assert len(server.requests) == 5


def test_api_key_never_stored_logged_or_shown(serve, make_judge, tmp_path, caplog):
    server = serve(
        lambda body, n: (503, f"overloaded for {KEY}", 0.0) if n == 0 else (200, chat(verdict_json(1)), 0.0)
    )
    judge = make_judge(server)
    with caplog.at_level(logging.WARNING, logger="gapeval.judges.vlm"):
        verdict = judge.judge(text_item(), "Ssireum")
        judge.judge(image_item(), solid((5, 5, 5)))
    assert verdict.correct is True and caplog.records  # the 503 was retried and logged
    judge.close()
    stored = b"".join(p.read_bytes() for p in (tmp_path / "cache").iterdir())
    assert b"checked" in stored  # the cache holds the replies...
    assert KEY.encode() not in stored  # ...but never the key
    shown = [repr(judge), str(vars(judge)), json.dumps(judge.config()), json.dumps(verdict.to_dict())]
    shown += [r.getMessage() for r in caplog.records]
    assert not [s for s in shown if KEY in s]


def test_judge_many_keeps_order_dedups_and_respects_concurrency(serve, make_judge):
    def script(body: dict, n: int) -> tuple[int, str, float]:
        index = int(re.search(r"answer-(\d+)", body["messages"][1]["content"]).group(1))
        return 200, chat(verdict_json(int(index % 3 == 0))), 0.0

    server = serve(script, gate=3)
    judge = make_judge(server, concurrency=3, verify=False)
    pairs = [(text_item(), f"answer-{i}") for i in range(10)] + [(text_item(), "answer-0")]
    verdicts = judge.judge_many(pairs)
    assert [v.correct for v in verdicts] == [i % 3 == 0 for i in range(10)] + [True]
    assert len(server.requests) == 10  # the repeated pair was sent once
    assert server.max_in_flight == 3


def test_unjudgeable_inputs(serve, make_judge):
    server = serve(always(verdict_json(1)))
    judge = make_judge(server)
    verdict = judge.judge(text_item(reference=[]), "Ssireum")
    assert verdict.correct is None and "no text reference" in verdict.error
    with pytest.raises(TypeError, match="str .und. or a PIL image .gen."):
        judge.judge(text_item(), 42)
    assert server.requests == []


# --- configuration ---------------------------------------------------------------------------------------------


def test_from_env_and_config(monkeypatch, tmp_path):
    for name in ("GAPEVAL_JUDGE_BASE_URL", "GAPEVAL_JUDGE_MODEL", "GAPEVAL_JUDGE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert VLMJudge.from_env() is None
    monkeypatch.setenv("GAPEVAL_JUDGE_BASE_URL", "http://127.0.0.1:9/v1/")
    with pytest.raises(ValueError, match="GAPEVAL_JUDGE_MODEL"):
        VLMJudge.from_env(cache_dir=tmp_path)
    monkeypatch.setenv("GAPEVAL_JUDGE_MODEL", "qwen-vl")
    monkeypatch.setenv("GAPEVAL_JUDGE_API_KEY", KEY)
    judge = VLMJudge.from_env(cache_dir=tmp_path)
    assert judge.endpoint == "http://127.0.0.1:9/v1/chat/completions" and judge.id == "vlm:qwen-vl:gapeval-v1"
    assert KEY not in repr(judge) and "<set>" in repr(judge)
    judge.close()
    monkeypatch.setenv("MY_JUDGE_KEY", KEY)
    config = {"base_url": "https://api.example.com/v1", "model": "m", "api_key_env": "MY_JUDGE_KEY"}
    with VLMJudge.from_config({**config, "cache_dir": str(tmp_path)}) as judge:
        assert judge._api_key.reveal() == KEY
    with pytest.raises(ValueError, match="unknown keys"):
        VLMJudge.from_config({**config, "temprature": 0})
    with pytest.raises(ValueError, match="http"):
        VLMJudge("ftp://host", "m", use_cache=False)


def test_packaged_rubrics_cover_every_cell_and_render_item_text_literally():
    rubrics = load_rubrics()
    prompts = {rubrics.system_prompt(c, d) for c in CATEGORIES for d in DIRECTIONS}
    assert len(prompts) == 8
    sneaky = "Name it. $answer ${reference} {answer} $$ {{x}}"
    messages = build_messages(rubrics, text_item(und_prompt=sneaky), "Ssireum")
    user = messages[1]["content"]
    assert sneaky in user and user.count("Ssireum") == 2  # once as reference, once as the answer


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["criteria"]["reasoning"].pop("gen"), "criteria.reasoning.gen"),
        (lambda d: d["cases"].update(und=d["cases"]["und"] + " $secret"), r"unknown placeholder \$secret"),
        (lambda d: d["cases"].update(gen="$answer"), r"unknown placeholder \$answer"),
        (lambda d: d.update(version=None), "version"),
    ],
)
def test_bad_rubric_file_names_file_and_field(tmp_path, edit, message):
    import yaml

    from gapeval.judges.vlm import RUBRICS_PATH

    data = yaml.safe_load(RUBRICS_PATH.read_text())
    edit(data)
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(RubricError, match=message) as raised:
        load_rubrics(path)
    assert "custom.yaml" in str(raised.value)


def test_rubric_file_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(RubricError, match="cannot read rubrics"):
        load_rubrics(path)
