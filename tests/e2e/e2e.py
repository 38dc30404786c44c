#!/usr/bin/env python3
"""End-to-end: the real Open WebUI (0.12.4, 0.10.2 or 0.6.43: the venv's) against a running sluice.

Starts a mock OpenAI Responses server and a mock OpenPipe on 127.0.0.1, sluice (pointed at
both), and Open WebUI (offline, fresh DATA_DIR, one OpenAI connection = sluice). Then drives
everything through Open WebUI's own REST API as a browser or an API user would, prints one
PASS/FAIL line per scenario and a final `N passed, M failed` line, and stops every process it
started. Run through tests/e2e/run.sh, which provides the virtual environments. What differs
between releases is encoded where a scenario meets it (`c.owui_version`).
"""

import argparse
import asyncio
import base64
import importlib.metadata
import json
import os
import pathlib
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
import uuid

import aiohttp
from aiohttp import web

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "api" / "fixtures" / "responses-api"
SLUICE_KEY = "e2e-sluice-key-" + uuid.uuid4().hex[:12]
OPENAI_KEY = "sk-e2e-" + uuid.uuid4().hex[:16]
OPENPIPE_KEY = "opk-e2e-" + uuid.uuid4().hex[:16]
SESSION = "e2e-session-1"
# The Open WebUI release of this venv: the scenarios encode what differs between releases.
OWUI_VERSION = importlib.metadata.version("open-webui")


_GIVEN_PORTS = set()


def free_port() -> int:
    """A port free now and not handed out before by this process: the kernel may offer a port
    it just offered again, and two servers of one run would then collide (seen once: Open WebUI's
    health check answered by sluice)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _GIVEN_PORTS:
            _GIVEN_PORTS.add(port)
            return port


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def sse(events) -> bytes:
    return b"".join(
        f"event: {e['type']}\ndata: {json.dumps(e, separators=(',', ':'))}\n\n".encode() for e in events
    )


def text_transcript(text: str, model: str = "gpt-4.1") -> bytes:
    """A plain answer in the Responses wire format (same event sequence as fixture 1)."""
    rid, mid = "resp_" + uuid.uuid4().hex, "msg_" + uuid.uuid4().hex
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
    item = {"id": mid, "type": "message", "status": "completed", "content": [part], "role": "assistant"}
    base = {"id": rid, "object": "response", "created_at": int(time.time()), "model": model, "output": []}
    return sse([
        {"type": "response.created", "sequence_number": 0, "response": {**base, "status": "in_progress"}},
        {"type": "response.output_item.added", "sequence_number": 1, "output_index": 0,
         "item": {**item, "status": "in_progress", "content": []}},
        {"type": "response.content_part.added", "sequence_number": 2, "item_id": mid, "output_index": 0,
         "content_index": 0, "part": {**part, "text": ""}},
        {"type": "response.output_text.delta", "sequence_number": 3, "item_id": mid, "output_index": 0,
         "content_index": 0, "delta": text, "logprobs": []},
        {"type": "response.output_text.done", "sequence_number": 4, "item_id": mid, "output_index": 0,
         "content_index": 0, "text": text, "logprobs": []},
        {"type": "response.content_part.done", "sequence_number": 5, "item_id": mid, "output_index": 0,
         "content_index": 0, "part": part},
        {"type": "response.output_item.done", "sequence_number": 6, "output_index": 0, "item": item},
        {"type": "response.completed", "sequence_number": 7,
         "response": {**base, "status": "completed", "output": [item],
                      "usage": {"input_tokens": 50, "input_tokens_details": {"cached_tokens": 0},
                                "output_tokens": 9, "output_tokens_details": {"reasoning_tokens": 0},
                                "total_tokens": 59}}},
    ])


def tiny_pdf(text: str) -> bytes:
    """A valid one-page PDF showing `text` (a parser such as Open WebUI's extracts it)."""
    stream = f"BT /F1 18 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def user_text(body: dict) -> str:
    """The last user message of a Responses request."""
    for item in reversed(body.get("input") or []):
        if isinstance(item, dict) and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                return content
            return "".join(p.get("text", "") for p in content or [] if isinstance(p, dict))
    return ""


class MockOpenAI:
    """`POST /v1/responses` answered from the byte-exact fixtures, chosen by a keyword."""

    def __init__(self):
        self.requests = []

    async def responses(self, request: web.Request):
        if request.headers.get("authorization") != f"Bearer {OPENAI_KEY}":
            return web.json_response({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                                                "code": "invalid_api_key"}}, status=401)
        body = await request.json()
        self.requests.append(body)
        said = user_text(body)
        outputs = [i for i in body.get("input", []) if isinstance(i, dict) and i.get("type") == "function_call_output"]
        if "e2e:429" in said:
            return web.json_response(
                {"error": {"message": "Rate limit reached for gpt-4.1 on tokens per min (TPM). Please try again in 20s.",
                           "type": "tokens", "param": None, "code": "rate_limit_exceeded"}},
                status=429, headers={"retry-after": "0", "x-request-id": "req_e2e429"})
        if "e2e:midfail" in said:
            name = "5a_failed.sse"
        elif "e2e:reasoning" in said:
            name = "2_reasoning_summary.sse"
        elif "e2e:citation" in said:
            name = "4_web_search.sse"
        elif "e2e:tool" in said:
            name = "3b_function_call_followup.sse" if outputs else "3a_function_call.sse"
        elif "### Task:" in said and "title" in said.lower():
            return self.stream(text_transcript('{"title": "Sluice E2E Title"}'))
        elif "### Task:" in said:
            return self.stream(text_transcript('{"tags": [], "follow_ups": [], "queries": []}'))
        else:
            name = "1_plain_text.sse"
        return self.stream(fixture(name))

    def stream(self, data: bytes):
        return web.Response(body=data, headers={"content-type": "text/event-stream; charset=utf-8"})


class MockOpenPipe:
    """`POST /api/v1/report` with bearer auth; answers 503 while `down_until` is in the future."""

    def __init__(self):
        self.reports = []
        self.attempts = 0
        self.down_until = 0.0
        self.datasets, self.entries = [], []

    async def report(self, request: web.Request):
        self.attempts += 1
        if request.headers.get("authorization") != f"Bearer {OPENPIPE_KEY}":
            return web.json_response({"message": "Invalid API key", "code": "UNAUTHORIZED"}, status=401)
        body = await request.json()
        extra = set(body) - {"requestedAt", "receivedAt", "reqPayload", "respPayload", "statusCode", "errorMessage", "tags"}
        if extra or any(isinstance(v, (list, dict)) for v in (body.get("tags") or {}).values()):
            return web.json_response({"message": f"invalid report: {sorted(extra)}", "code": "BAD_REQUEST"}, status=400)
        if time.time() < self.down_until:
            return web.json_response({"message": "unavailable", "code": "INTERNAL_SERVER_ERROR"}, status=503)
        self.reports.append(body)
        return web.json_response({"status": "ok"})

    def find(self, **tags):
        return [r for r in self.reports if all(r.get("tags", {}).get(k) == v for k, v in tags.items())]

    # Datasets, as OpenPipe's API answers them (list, create, add entries).
    datasets: list
    entries: list

    def authorized(self, request) -> bool:
        return request.headers.get("authorization") == f"Bearer {OPENPIPE_KEY}"

    async def list_datasets(self, request: web.Request):
        if not self.authorized(request):
            return web.json_response({"message": "Invalid API key", "code": "UNAUTHORIZED"}, status=401)
        return web.json_response({"object": "list", "data": self.datasets})

    async def create_dataset(self, request: web.Request):
        if not self.authorized(request):
            return web.json_response({"message": "Invalid API key", "code": "UNAUTHORIZED"}, status=401)
        body = await request.json()
        dataset = {"object": "dataset", "id": f"ds_{len(self.datasets) + 1}", "name": body["name"],
                   "created": "2026-12-02T00:00:00Z", "updated": "2026-12-02T00:00:00Z",
                   "dataset_entry_count": 0, "fine_tune_count": 0}
        self.datasets.append(dataset)
        return web.json_response(dataset)

    async def add_entries(self, request: web.Request):
        if not self.authorized(request):
            return web.json_response({"message": "Invalid API key", "code": "UNAUTHORIZED"}, status=401)
        dataset_id = request.match_info["id"]
        if not any(d["id"] == dataset_id for d in self.datasets):
            return web.json_response({"message": "Dataset not found", "code": "NOT_FOUND"}, status=404)
        entries = (await request.json()).get("entries") or []
        allowed = {"messages", "rejected_message", "tools", "tool_choice", "response_format", "split", "metadata"}
        errors = [{"object": "dataset.entries.creation.error", "entry_index": i,
                   "message": f"Unrecognized key: {sorted(set(e) - allowed)[0]}"}
                  for i, e in enumerate(entries) if set(e) - allowed]
        created = [e for e in entries if not set(e) - allowed]
        self.entries.extend((dataset_id, e) for e in created)
        return web.json_response({"object": "dataset.entries.creation", "entries_created": len(created),
                                  "errors": {"object": "list", "data": errors}})


async def serve(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


class Process:
    def __init__(self, name, cmd, env, log_path, cwd=None):
        self.name, self.log_path = name, log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=cwd)

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 15)
                self.proc.wait(timeout=15)
            except Exception:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self.log.close()

    def text(self) -> str:
        return pathlib.Path(self.log_path).read_text(errors="replace")


def calls_since(log: str, offset: int):
    """`METHOD path -> status` for each request sluice handled, from its JSON log lines."""
    out = []
    for line in log[offset:].splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if entry.get("message") == "handled":
            method = (entry.get("span") or {}).get("method", "?")
            out.append(f"{method} {entry.get('path')} -> {entry.get('status')}")
    return out


async def wait_http(session, url, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            async with session.get(url) as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.5)
    raise RuntimeError(f"{url} did not come up in {seconds} s")


async def eventually(check, seconds=30, every=0.25):
    """Retries `check` (returns a truthy value or raises AssertionError) until it passes."""
    deadline = time.time() + seconds
    while True:
        try:
            result = await check() if asyncio.iscoroutinefunction(check) else check()
            if result:
                return result
            error = AssertionError("condition not met")
        except AssertionError as e:
            error = e
        if time.time() > deadline:
            raise error
        await asyncio.sleep(every)


class Socket:
    """Open WebUI's socket as the browser holds it: events for the signed-in user, by chat and
    message (0.6 sends usage, sources and in-stream errors only this way)."""

    def __init__(self):
        self.events = []
        self.client = None

    async def connect(self, base, token):
        import socketio  # Open WebUI depends on python-socketio
        self.client = socketio.AsyncClient()

        @self.client.on("events")
        async def on_event(event):
            self.events.append(event)

        await self.client.connect(base, socketio_path="/ws/socket.io", transports=["websocket"], auth={"token": token})
        await self.client.call("user-join", {"auth": {"token": token}}, timeout=10)

    def events_of(self, chat_id, message_id):
        return [e.get("data") or {} for e in self.events
                if e.get("chat_id") == chat_id and e.get("message_id") == message_id]

    async def close(self):
        if self.client:
            await self.client.disconnect()


class OpenWebUI:
    def __init__(self, session, base, version):
        self.session, self.base, self.token, self.version = session, base, None, version
        self.socket = Socket()

    def headers(self):
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def call(self, method, path, body=None, expect=None):
        async with self.session.request(method, self.base + path, json=body, headers=self.headers()) as r:
            text = await r.text()
            try:
                data = json.loads(text) if text else None
            except json.JSONDecodeError:
                data = text
            if expect is not None and r.status != expect:
                raise AssertionError(f"{method} {path} -> {r.status} {text[:500]}")
            return r.status, data

    async def ui_chat(self, model, text, tasks=None, chat_id=None, parent_id=None, history=(), files=None):
        """Posts a chat the way the browser UI does (socket session, saved chat), then waits
        for the answer Open WebUI stores."""
        if self.version < (0, 10):
            return await self.ui_chat_0_6(model, text, tasks, chat_id, parent_id, history)
        user_id, answer_id = str(uuid.uuid4()), str(uuid.uuid4())
        body = self.turn(model, text, tasks, user_id, answer_id, parent_id, history)
        if files:
            body["files"] = files
            body["user_message"]["files"] = files
        if chat_id:
            body["chat_id"] = chat_id
        _, started = await self.call("POST", "/api/chat/completions", body, expect=200)
        chat_id = started["chat_id"]

        async def done():
            _, chat = await self.call("GET", f"/api/v1/chats/{chat_id}", expect=200)
            message = chat["chat"]["history"]["messages"].get(answer_id) or {}
            # Over when done; Open WebUI 0.10 stores an error that came before the stream
            # without `done`.
            return (chat, message) if message.get("done") or message.get("error") else None

        chat, message = await eventually(done, 60)
        return chat_id, answer_id, user_id, message, chat

    @staticmethod
    def turn(model, text, tasks, user_id, answer_id, parent_id, history):
        """The body of `POST /api/chat/completions` as the browser sends it."""
        return {
            "stream": True, "model": model,
            "messages": [*history, {"role": "user", "content": text}],
            "params": {}, "tool_ids": [], "files": None, "variables": {},
            "features": {"voice": False, "image_generation": False, "code_interpreter": False, "web_search": False},
            "session_id": SESSION, "id": answer_id, "parent_id": parent_id,
            "user_message": {"id": user_id, "parentId": parent_id, "childrenIds": [answer_id], "role": "user",
                             "content": text, "timestamp": int(time.time()), "models": [model]},
            "background_tasks": tasks or {},
        }

    async def ui_chat_0_6(self, model, text, tasks, chat_id, parent_id, history):
        """The 0.6 browser: it saves the chat with the new messages first, sends the turn (run
        as a task keyed by the chat), learns the end only over its socket (here: the chat's
        task list empties), then calls `/api/chat/completed` (the outlets run there) and saves
        the finished message."""
        user_id, answer_id = str(uuid.uuid4()), str(uuid.uuid4())
        now = int(time.time())
        user_message = {"id": user_id, "parentId": parent_id, "childrenIds": [answer_id], "role": "user",
                        "content": text, "timestamp": now, "models": [model]}
        placeholder = {"id": answer_id, "parentId": user_id, "childrenIds": [], "role": "assistant",
                       "content": "", "model": model, "timestamp": now}
        if chat_id:
            _, saved = await self.call("GET", f"/api/v1/chats/{chat_id}", expect=200)
            chat = saved["chat"]
            if not history:
                history = branch_0_6(chat["history"]["messages"], parent_id)
        else:
            chat = {"title": "New Chat", "models": [model], "params": {}, "messages": [],
                    "history": {"messages": {}, "currentId": None}, "tags": [], "timestamp": now * 1000}
        messages = chat["history"]["messages"]
        if parent_id in messages:
            messages[parent_id].setdefault("childrenIds", []).append(user_id)
        messages[user_id], messages[answer_id] = user_message, placeholder
        chat["history"]["currentId"] = answer_id
        if chat_id:
            await self.call("POST", f"/api/v1/chats/{chat_id}", {"chat": chat}, expect=200)
        else:
            _, created = await self.call("POST", "/api/v1/chats/new", {"chat": chat}, expect=200)
            chat_id = created["id"]
        body = self.turn(model, text, tasks, user_id, answer_id, parent_id, history)
        # 0.6 names the answer's parent: the user message, sent whole.
        body.update({"chat_id": chat_id, "parent_id": user_id, "parent_message": user_message})
        await self.call("POST", "/api/chat/completions", body, expect=200)

        async def over():
            _, running = await self.call("GET", f"/api/tasks/chat/{chat_id}", expect=200)
            return not running.get("task_ids")

        await asyncio.sleep(0.2)
        await eventually(over, 60)
        _, saved = await self.call("GET", f"/api/v1/chats/{chat_id}", expect=200)
        message = saved["chat"]["history"]["messages"].get(answer_id) or {}
        # What the browser learns over its socket and saves with the message: usage, sources,
        # and an error that came after the first byte.
        await asyncio.sleep(0.3)
        for data in self.socket.events_of(chat_id, answer_id):
            kind, payload = data.get("type"), data.get("data") or {}
            if kind == "chat:completion":
                for key in ("usage", "sources", "error"):
                    if payload.get(key):
                        message[key] = payload[key]
            elif kind in ("source", "citation"):
                message.setdefault("sources", []).append(payload)
            elif kind == "chat:message:error":
                message["error"] = payload.get("error") or payload
        if not message.get("error"):
            # As the 0.6 browser's chatCompletedHandler sends them: usage and sources included.
            answer = {"id": answer_id, "role": "assistant", "content": message.get("content", ""),
                      **{k: message[k] for k in ("usage", "sources") if message.get(k)}}
            branch = [*history, {"id": user_id, "role": "user", "content": text}, answer]
            completed = {"model": model, "messages": branch, "chat_id": chat_id, "session_id": SESSION, "id": answer_id}
            await self.call("POST", "/api/chat/completed", completed, expect=200)
            message["done"] = True
            saved["chat"]["history"]["messages"][answer_id] = message
            await self.call("POST", f"/api/v1/chats/{chat_id}", {"chat": saved["chat"]}, expect=200)
        return chat_id, answer_id, user_id, message, saved


def process_details_0_6(content: str) -> str:
    """What Open WebUI 0.6's browser sends of an earlier message (its `processDetails`):
    reasoning and code blocks removed, a tool block replaced by its quoted result."""
    content = re.sub(r'<details\s+type="(?:reasoning|code_interpreter)"[^>]*>.*?</details>', "", content,
                     flags=re.I | re.S)
    for block in re.findall(r'<details\s+type="tool_calls"[^>]*>[\s\S]*?</details>', content, flags=re.I):
        result = dict(re.findall(r'(\w+)="([^"]*)"', block)).get("result")
        if result:
            content = content.replace(block, f'"{result}"')
    return content


def branch_0_6(messages: dict, leaf_id) -> list:
    """The conversation up to `leaf_id` as the 0.6 browser sends it."""
    branch = []
    while leaf_id and leaf_id in messages:
        m = messages[leaf_id]
        branch.append({"role": m["role"], "content": process_details_0_6(m.get("content", ""))})
        leaf_id = m.get("parentId")
    return branch[::-1]


def answer_text(message: dict) -> str:
    """The reply as a user sees it: `content`, or (Open WebUI 0.10 keeps web-UI replies only
    as Responses-style `output` items, with `content` empty) the text of its message items."""
    if message.get("content"):
        return message["content"]
    return "".join(part.get("text", "") for item in message.get("output") or []
                   if isinstance(item, dict) and item.get("type") == "message"
                   for part in item.get("content") or [] if isinstance(part, dict))


class Results(list):
    """Each check's outcome (True/False) and the lines every suite prints: `PASS name (t s)` or
    `FAIL name: why`, and a last `N passed, M failed` that tests/run.sh sums."""

    async def scenario(self, name, run, verbose=False, limit=800):
        """Awaits `run` (a scenario) and records how it went."""
        started = time.time()
        try:
            await run
            self.append(True)
            print(f"PASS {name} ({time.time() - started:.1f} s)", flush=True)
        except Exception as e:
            self.append(False)
            print(f"FAIL {name}: {(str(e) or type(e).__name__)[:limit]}", flush=True)
            if verbose:
                traceback.print_exc()

    async def run(self, scenarios, c, args, limit=800):
        """Every scenario (those whose name has `args.only`, when given), in order."""
        for fn in scenarios:
            if args.only and args.only not in fn.__name__:
                continue
            await self.scenario(fn.__name__, fn(c), args.verbose, limit)

    def harness_failed(self, e):
        """The suite itself broke (a process that did not start, a mock that failed)."""
        self.append(False)
        print(f"FAIL harness: {e}", flush=True)
        traceback.print_exc()

    def show_logs(self, procs, lines):
        """After a failure, the last `lines` of each process's log."""
        for p in procs:
            if self.count(False):
                print(f"--- last lines of {p.name}'s log ---")
                print("\n".join(p.text().splitlines()[-lines:]))

    async def tear_down(self, procs, runners, work, log_lines):
        """Stops the processes (their logs shown after a failure) and the mock servers, and
        removes the work directory."""
        for p in procs:
            p.stop()
        self.show_logs(procs, log_lines)
        for r in runners:
            await r.cleanup()
        shutil.rmtree(work, ignore_errors=True)

    def finish(self, only) -> int:
        """The summary line; the exit status (a run that checked nothing fails, unless filtered)."""
        print(f"{self.count(True)} passed, {self.count(False)} failed", flush=True)
        return 0 if (self or only) and not self.count(False) else 1


SCENARIOS = []


def scenario(fn):
    SCENARIOS.append(fn)
    return fn


class Ctx:
    verbose = False

    def show(self, label, value):
        """With --verbose, what a scenario saw (to check the checks)."""
        if self.verbose:
            print(f"  {label}: {json.dumps(value, ensure_ascii=False)[:1500]}", flush=True)


@scenario
async def connection_is_a_pipelines_server(c):
    _, listed = await c.owui.call("GET", "/api/v1/pipelines/list", expect=200)
    assert [d["url"] for d in listed["data"]] == [c.sluice_url], listed
    _, models = await c.owui.call("GET", "/api/models", expect=200)
    ids = [m["id"] for m in models["data"]]
    assert "openai_responses.gpt-4.1" in ids, ids
    assert not any(i.startswith("openpipe_reporting") for i in ids), ids
    entry = next(m for m in models["data"] if m["id"] == "openai_responses.gpt-4.1")
    assert entry["pipeline"]["type"] == "manifold" and entry["name"].startswith("OpenAI"), entry


@scenario
async def admin_pipelines_routes(c):
    _, pipelines = await c.owui.call("GET", "/api/v1/pipelines/?urlIdx=0", expect=200)
    by_id = {p["id"]: p for p in pipelines["data"]}
    assert by_id["openpipe_reporting"]["type"] == "filter" and by_id["openai_responses"]["valves"], pipelines
    _, spec = await c.owui.call("GET", "/api/v1/pipelines/openpipe_reporting/valves/spec?urlIdx=0", expect=200)
    keys = list(spec["properties"])
    assert keys[:2] == ["pipelines", "priority"] and spec["properties"]["TIMEOUT_SECONDS"]["title"], keys
    _, values = await c.owui.call("GET", "/api/v1/pipelines/openpipe_reporting/valves?urlIdx=0", expect=200)
    assert values["OPENPIPE_API_KEY"].startswith("********") and OPENPIPE_KEY not in json.dumps(values), values
    # The editor sends every value back, edited numbers as strings, arrays as lists of strings.
    update = {**values, "TIMEOUT_SECONDS": "12", "priority": "0", "pipelines": ["*"]}
    await c.owui.call("POST", "/api/v1/pipelines/openpipe_reporting/valves/update?urlIdx=0", update, expect=200)
    _, after = await c.owui.call("GET", "/api/v1/pipelines/openpipe_reporting/valves?urlIdx=0", expect=200)
    assert after["TIMEOUT_SECONDS"] == 12 and after["OPENPIPE_API_KEY"] == values["OPENPIPE_API_KEY"], after
    # A bad value is refused and nothing changes; the reason reaches the caller.
    bad = {**after, "TIMEOUT_SECONDS": "0"}
    status, refused = await c.owui.call("POST", "/api/v1/pipelines/openpipe_reporting/valves/update?urlIdx=0", bad)
    c.show("refusal as Open WebUI returns it", [status, refused])
    # Open WebUI 0.12.4 keeps sluice's status but reads the body after releasing the connection,
    # so its caller gets "Pipeline not found"; the reason travels in the status line's reason
    # phrase, which Open WebUI logs.
    assert status == 422, (status, refused)
    _, unchanged = await c.owui.call("GET", "/api/v1/pipelines/openpipe_reporting/valves?urlIdx=0", expect=200)
    assert unchanged["TIMEOUT_SECONDS"] == 12, unchanged
    reason = "TIMEOUT_SECONDS: must be between 1 and 120"
    await eventually(lambda: reason in c.owui_proc.text(), 10)
    assert reason in c.sluice.text(), "sluice logs the refusal too"


@scenario
async def streaming_chat_with_reasoning_and_usage(c):
    chat_id, answer_id, _, message, _ = await c.owui.ui_chat("openai_responses.o4-mini", "e2e:reasoning why is the sky blue")
    assert not message.get("error"), message.get("error")
    text = answer_text(message)
    c.show("reasoning chat message", message)
    assert text.endswith("17 × 23 = **391**."), text
    assert "[sluice:" not in json.dumps(message), "nothing is added to an answer"
    c.reasoning_chat = (chat_id, answer_id)
    if c.owui_version < (0, 10):
        # 0.6 keeps the reasoning in the content as a collapsible block.
        assert text.startswith('<details type="reasoning"') and "Checking the arithmetic" in text, text
    else:
        reasoning = [o for o in message.get("output") or [] if o.get("type") == "reasoning"]
        assert reasoning and "Checking the arithmetic" in json.dumps(reasoning), message.get("output")
    usage = message.get("usage") or {}
    assert usage.get("total_tokens") == 244 and usage.get("completion_tokens_details", {}).get("reasoning_tokens") == 192, usage


@scenario
async def the_next_turn_finds_the_earlier_answer_by_its_text(c):
    """No marker in the answer: the next turn finds the stored items (encrypted reasoning, the
    message with its id) by the answer's text, as Open WebUI sends it back from its database."""
    chat_id, answer_id = c.reasoning_chat
    before = len(c.openai.requests)
    _, _, _, message, _ = await c.owui.ui_chat(
        "openai_responses.o4-mini", "e2e:plain and in French?", chat_id=chat_id, parent_id=answer_id)
    assert not message.get("error"), message.get("error")
    sent = [r for r in c.openai.requests[before:] if "e2e:plain" in user_text(r)]
    assert sent, "no upstream request for the second turn"
    items = sent[-1]["input"]
    c.show("second turn input", items)
    types = [i.get("type") or i.get("role") for i in items if isinstance(i, dict)]
    assert "reasoning" in types and "message" in types, f"the first answer replayed as its items: {types}"


@scenario
async def streaming_chat_with_a_citation(c):
    _, _, _, message, _ = await c.owui.ui_chat("openai_responses.gpt-4.1", "e2e:citation latest news")
    assert not message.get("error"), message.get("error")
    c.show("citation message", message)
    if c.owui_version < (0, 10):
        # 0.6 passes the url_citation annotations to its browser as they came and shows no
        # source list for them; the links stay in the text.
        assert "https://www.toureiffel.paris/" in message.get("content", ""), message
        return
    sources = json.dumps(message.get("sources") or [])
    assert "http" in sources, message


@scenario
async def non_streaming_api_chat(c):
    body = {"model": "openai_responses.gpt-4.1", "stream": False,
            "messages": [{"role": "user", "content": "e2e:plain bonjour"}]}
    _, reply = await c.owui.call("POST", "/api/chat/completions", body, expect=200)
    content = reply["choices"][0]["message"]["content"]
    assert content == "Bonjour! Ça va ? Comment puis-je vous aider ?", reply
    assert reply["usage"]["total_tokens"] == 37, reply


@scenario
async def api_chats_are_reported_once_with_their_text(c):
    """A chat of an API caller (no chat, no socket): reported once, with the answer, on every
    version: from the outlet on 0.10+, from the answer sluice gave on 0.6 (which sends no
    outlet; REPORT_API_CHATS_FROM_ANSWERS is on there, as the README tells operators)."""
    for stream in (False, True):
        said = f"e2e:plain api report {uuid.uuid4().hex[:8]}"
        body = {"model": "openai_responses.gpt-4.1", "stream": stream, "messages": [{"role": "user", "content": said}]}
        status, _ = await c.owui.call("POST", "/api/chat/completions", body)
        assert status == 200, status

        def reports():
            return [r for r in c.openpipe.reports if said in json.dumps(r["reqPayload"].get("messages"))]

        found = await eventually(reports, 30)
        await asyncio.sleep(3)  # a second report would come within this
        found = reports()
        c.show(f"reports of the API chat (stream={stream})", found)
        assert len(found) == 1, [r["tags"] for r in found]
        content = found[0]["respPayload"]["choices"][0]["message"]["content"]
        assert content == "Bonjour! Ça va ? Comment puis-je vous aider ?", content


@scenario
async def an_attached_pdf_reaches_the_model_as_a_file(c):
    """A PDF uploaded through Open WebUI's own files API and attached to a chat: sluice fetches
    it with an Open WebUI API key (OPEN_WEBUI_URL, OPEN_WEBUI_API_KEY) and sends it to the
    model as an input_file, beside the text Open WebUI extracted."""
    if c.owui_version < (0, 12):
        return  # the browser flow of attachments is emulated for 0.12 only
    _, key = await c.owui.call("POST", "/api/v1/auths/api_key", {}, expect=200)
    async with c.http.post(f"{c.sluice_url}/openai_responses/valves/update",
                           json={"OPEN_WEBUI_URL": c.owui.base, "OPEN_WEBUI_API_KEY": key["api_key"]},
                           headers={"Authorization": f"Bearer {SLUICE_KEY}"}) as r:
        assert r.status == 200, await r.text()
    pdf = tiny_pdf("The sluice report says 42.")
    form = aiohttp.FormData()
    form.add_field("file", pdf, filename="report.pdf", content_type="application/pdf")
    async with c.http.post(f"{c.owui.base}/api/v1/files/?process_in_background=false", data=form,
                           headers=c.owui.headers()) as r:
        uploaded = await r.json()
        assert r.status == 200, uploaded
    c.show("uploaded file", uploaded)
    attached = [{"type": "file", "file": uploaded, "id": uploaded["id"], "url": f"/api/v1/files/{uploaded['id']}",
                 "name": "report.pdf", "status": "uploaded", "size": len(pdf), "collection_name": uploaded.get("meta", {}).get("collection_name")}]
    before = len(c.openai.requests)
    _, _, _, message, _ = await c.owui.ui_chat("openai_responses.gpt-4.1", "e2e:plain what does the report say?",
                                               files=attached)
    assert not message.get("error"), message.get("error")
    sent = [r for r in c.openai.requests[before:] if "what does the report say" in user_text(r)]
    assert sent, "no upstream request"
    user = [i for i in sent[-1]["input"] if isinstance(i, dict) and i.get("role") == "user"][-1]
    parts = user["content"] if isinstance(user["content"], list) else []
    files = [p for p in parts if p.get("type") == "input_file"]
    c.show("parts of the user message", [{k: (v[:60] if isinstance(v, str) else v) for k, v in p.items()} for p in parts])
    assert [p["filename"] for p in files] == ["report.pdf"], parts
    assert files[0]["file_data"] == "data:application/pdf;base64," + base64.b64encode(pdf).decode(), "the bytes uploaded"
    assert "sk-" not in json.dumps(sent[-1]).replace(OPENAI_KEY, ""), "no key of Open WebUI reaches OpenAI"


@scenario
async def tool_call_round_trip(c):
    before = len(c.openai.requests)
    chat_id, answer_id, _, message, _ = await c.owui.ui_chat(
        "openai_responses.gpt-5-mini", "e2e:tool Weather in Paris and London?")
    assert not message.get("error"), message.get("error")
    calls = [r for r in c.openai.requests[before:] if "e2e:tool" in user_text(r)]
    assert len(calls) >= 2, f"{len(calls)} upstream requests"
    second = calls[1]["input"]
    types = [i.get("type") for i in second if isinstance(i, dict)]
    call_ids = {i.get("call_id") for i in second if isinstance(i, dict) and i.get("type") == "function_call"}
    out_ids = {i.get("call_id") for i in second if isinstance(i, dict) and i.get("type") == "function_call_output"}
    assert "reasoning" in types, f"encrypted reasoning replayed: {types}"
    assert call_ids == out_ids == {"call_9sKq2VbQm1Xw7LhT0pRz3aEe", "call_Ht4nY8cJ2oWd6FgS1uMx5vBk"}, (call_ids, out_ids)
    c.show("tool round trip second request input types", types)
    c.show("tool round trip message", message)
    assert "Paris" in answer_text(message), message
    # The filter's report: one per model step (2 calls -> 3 steps), tools named, results replayed.
    reports = await eventually(lambda: (r := c.openpipe.find(message_id=answer_id)) and len(r) >= 3 and r, 30)
    reports.sort(key=lambda r: r["respPayload"]["id"])
    c.show("tool turn reports", [(r["respPayload"]["id"], r["tags"], r["respPayload"]["choices"][0]) for r in reports])
    assert [r["respPayload"]["id"] for r in reports] == [f"chatcmpl-{answer_id}-s{k}" for k in range(3)], reports
    assert all(r["tags"]["interaction_type"] == "function_calling" for r in reports)
    assert reports[0]["tags"]["tools_used"].startswith("get_weather") or "get_weather" in reports[0]["tags"]["tools_used"]
    assert "[sluice:" not in json.dumps(reports), "replay markers leaked into the reports"
    last = reports[2]["reqPayload"]["messages"]
    assert [m["role"] for m in last[-4:]] == ["assistant", "tool", "assistant", "tool"], last


async def chat_error(c, text):
    """A UI chat that fails upstream: the stored message and its error as JSON text."""
    _, _, _, message, _ = await c.owui.ui_chat("openai_responses.gpt-4.1", text)
    c.show(f"message of {text!r}", message)
    return message, json.dumps(message.get("error") or {})


@scenario
async def upstream_429_shown_as_readable_error(c):
    message, error = await chat_error(c, "e2e:429 please")
    assert "Rate limit reached" in error, message


@scenario
async def api_caller_gets_the_upstream_error(c):
    """OpenAI's 429 for an API caller: sluice answers 429 with OpenAI's message; Open WebUI
    0.10 turns every error reply into 400 (the message kept), 0.6 and 0.12 keep the status."""
    body = {"model": "openai_responses.gpt-4.1", "stream": False,
            "messages": [{"role": "user", "content": "e2e:429 from an API caller"}]}
    status, reply = await c.owui.call("POST", "/api/chat/completions", body)
    c.show("API caller's error", [status, reply])
    assert status == (400 if (0, 10) <= c.owui_version < (0, 12) else 429), (status, reply)
    assert "Rate limit reached" in json.dumps(reply), reply
    assert (reply.get("error") or {}).get("param") is None, "OpenAI names no parameter here"


@scenario
async def mid_stream_failure_shown_as_readable_error(c):
    message, error = await chat_error(c, "e2e:midfail go")
    assert "The model failed to generate a response" in error, message


@scenario
async def reporting_filter_reports_the_chat(c):
    chat_id, answer_id = c.reasoning_chat
    await eventually(lambda: c.openpipe.find(chat_id=chat_id, message_id=answer_id), 30)
    await asyncio.sleep(2)  # a second report of the turn would come within this
    reports = c.openpipe.find(chat_id=chat_id, message_id=answer_id)
    assert len(reports) == 1, [r["tags"] for r in reports]
    report = reports[0]
    tags = report["tags"]
    c.show("report of the reasoning chat", report)
    assert tags["capture"] == "inlet_outlet" and tags["interaction_type"] in ("chat_message", "function_calling"), tags
    assert report["respPayload"]["id"] == f"chatcmpl-{answer_id}", report["respPayload"]["id"]
    assert "[sluice:" not in json.dumps(report), "replay marker leaked into the report"
    assert report["reqPayload"]["messages"] == [{"role": "user", "content": "e2e:reasoning why is the sky blue"}], \
        report["reqPayload"]["messages"]
    choice = report["respPayload"]["choices"][0]
    # 0.12 keeps the reasoning summary as an output item: it is reported as <think>…</think>.
    content = choice["message"]["content"]
    # 0.6 keeps the reasoning block in the text, so a line break follows it there.
    after = "</think>\n17 × 23 = **391**." if c.owui_version < (0, 10) else "</think>17 × 23 = **391**."
    assert content.startswith("<think>**Checking the arithmetic**") and content.endswith(after), choice
    assert choice["finish_reason"] == "stop", choice
    assert report["respPayload"]["usage"] == {"prompt_tokens": 30, "completion_tokens": 214, "total_tokens": 244}, report
    assert report["tags"]["model_id"] == "openai_responses.o4-mini" and int(report["tags"]["inference_time_ms"]) >= 0


@scenario
async def a_chat_is_added_to_a_dataset_with_the_cli(c):
    """The reference's "add to dataset" action: the chat made in Open WebUI, reported, then
    added by an operator with `sluice openpipe dataset-add` (which asks the running server)."""
    chat_id, answer_id = c.reasoning_chat
    await eventually(lambda: c.openpipe.find(chat_id=chat_id, message_id=answer_id), 30)

    def cli(*args):
        return subprocess.run([c.sluice_bin, "openpipe", "dataset-add", *args], env=c.sluice_env,
                              capture_output=True, text=True, timeout=60)

    done = await asyncio.to_thread(cli, "--chat", chat_id, "--dataset", "E2E Chats", "--split", "TEST")
    c.show("dataset-add", done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout + done.stderr
    entries = await eventually(lambda: [e for d, e in c.openpipe.entries if e["metadata"]["chat_id"] == chat_id], 30)
    assert [d["name"] for d in c.openpipe.datasets] == ["E2E Chats"], c.openpipe.datasets
    entry = entries[0]
    assert entry["split"] == "TEST" and entry["metadata"]["message_id"] == answer_id, entry
    assert entry["messages"][0] == {"role": "user", "content": "e2e:reasoning why is the sky blue"}, entry["messages"]
    assert entry["messages"][-1]["role"] == "assistant" and "391" in entry["messages"][-1]["content"], entry["messages"]
    assert "[sluice:" not in json.dumps(entry)
    # Again: nothing new is sent. An unknown chat is an error that says so.
    again = await asyncio.to_thread(cli, "--chat", chat_id, "--dataset", "E2E Chats")
    assert again.returncode == 0 and len(c.openpipe.entries) == len(entries), again.stdout + again.stderr
    # Mistakes, each said: an unknown chat, and no dataset named with no default set.
    unknown = await asyncio.to_thread(cli, "--chat", "no-such-chat", "--dataset", "E2E Chats")
    assert unknown.returncode != 0 and "no-such-chat" in unknown.stdout + unknown.stderr, unknown.stdout + unknown.stderr
    nameless = await asyncio.to_thread(cli, "--chat", chat_id)
    said = nameless.stdout + nameless.stderr
    assert nameless.returncode != 0 and "DEFAULT_DATASET_NAME" in said, said


@scenario
async def report_survives_an_openpipe_outage(c):
    c.openpipe.down_until = time.time() + 4
    attempts = c.openpipe.attempts
    chat_id, answer_id, _, message, _ = await c.owui.ui_chat("openai_responses.gpt-4.1", "e2e:plain during the outage")
    assert not message.get("error"), message
    await eventually(lambda: c.openpipe.attempts > attempts, 20)
    assert not c.openpipe.find(message_id=answer_id), "delivered while OpenPipe was down?"
    reports = await eventually(lambda: c.openpipe.find(chat_id=chat_id, message_id=answer_id), 40)
    assert len(reports) == 1, reports


@scenario
async def legacy_chat_completed_runs_the_outlet(c):
    chat_id, answer_id = c.reasoning_chat
    _, chat = await c.owui.call("GET", f"/api/v1/chats/{chat_id}", expect=200)
    history = chat["chat"]["history"]["messages"]
    answer = history[answer_id]
    question = history[answer["parentId"]]
    edited = answer["content"] + "\n\n(edited through /api/chat/completed)"
    body = {"model": "openai_responses.o4-mini", "chat_id": chat_id, "id": answer_id, "session_id": SESSION,
            "messages": [{"id": question["id"], "role": "user", "content": question["content"]},
                         {"id": answer_id, "role": "assistant", "content": edited}]}
    await c.owui.call("POST", "/api/chat/completed", body, expect=200)
    reports = await eventually(lambda: [r for r in c.openpipe.find(message_id=answer_id) if r["tags"].get("revision") == "1"], 30)
    assert "(edited through /api/chat/completed)" in reports[0]["respPayload"]["choices"][0]["message"]["content"]


@scenario
async def title_generation_task(c):
    chat_id, answer_id, _, message, _ = await c.owui.ui_chat(
        "openai_responses.gpt-4.1", "e2e:plain a chat that needs a title", tasks={"title_generation": True})
    assert not message.get("error"), message

    async def titled():
        _, chat = await c.owui.call("GET", f"/api/v1/chats/{chat_id}", expect=200)
        titles = (chat["chat"].get("title"), chat.get("title"))
        assert "Sluice E2E Title" in titles, f"the chat's titles are {titles}"
        return True

    def title_reported():
        reports = c.openpipe.find(chat_id=chat_id, interaction_type="title_generation")
        # Said when it fails: which reports of this chat came (it failed once in a full run as
        # "condition not met", and passed alone and in the suite again).
        kinds = [r.get("tags", {}).get("interaction_type") for r in c.openpipe.find(chat_id=chat_id)]
        assert reports, f"no title report; the chat's reports: {kinds}; {len(c.openpipe.reports)} in all"
        return reports

    await eventually(titled, 30)
    reports = await eventually(title_reported, 30)
    c.show("title report", reports[0])
    assert "Sluice E2E Title" in reports[0]["respPayload"]["choices"][0]["message"]["content"], reports[0]


@scenario
async def wrong_key_shows_no_pipelines_and_sluice_says_why(c):
    _, config = await c.owui.call("GET", "/openai/config", expect=200)
    wrong = {**config, "OPENAI_API_KEYS": ["not-the-key"]}
    await c.owui.call("POST", "/openai/config/update", wrong, expect=200)
    try:
        _, listed = await c.owui.call("GET", "/api/v1/pipelines/list", expect=200)
        assert listed["data"] == [], listed
        _, models = await c.owui.call("GET", "/api/models?refresh=true", expect=200)
        listed = any(m["id"].startswith("openai_responses.") for m in models["data"])
        # 0.10 keeps showing the models it had when a refresh finds none (its own cache).
        assert listed if c.owui_version < (0, 12) else not listed, models["data"]
        await eventually(lambda: "request refused: the key does not match" in c.sluice.text(), 10)
    finally:
        await c.owui.call("POST", "/openai/config/update", config, expect=200)
    _, listed = await c.owui.call("GET", "/api/v1/pipelines/list", expect=200)
    assert len(listed["data"]) == 1, listed


async def relayed_chat(request: web.Request):
    """An OpenAI-compatible chat completions stream, for the WebAssembly pipe that relays one."""
    await request.json()
    chunks = [{"choices": [{"index": 0, "delta": {"content": word}}]} for word in ("relayed ", "through ", "wasi:http")]
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    return web.Response(body=body.encode(), headers={"content-type": "text/event-stream"})


def test_ca(work: pathlib.Path, name: str) -> ssl.SSLContext:
    """A CA of this run (`work/certs/ca.pem`) and a server certificate for `name` (`DNS:host`
    or `IP:address`) signed by it, as the context of a server that presents it."""
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=work, check=True, capture_output=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=sluice test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=" + name.split(":", 1)[1])
    (work / "ext.cnf").write_text(f"subjectAltName={name}\nbasicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    (work / "certs").mkdir()
    shutil.copy(work / "ca.pem", work / "certs" / "ca.pem")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(work / "server.pem", work / "server.key")
    return context


async def upload_through_open_webui(c, path: pathlib.Path):
    """Open WebUI's "Upload pipeline": a multipart form with the file and the connection index."""
    form = aiohttp.FormData()
    form.add_field("urlIdx", "0")
    form.add_field("file", path.read_bytes(), filename=path.name, content_type="text/x-python")
    async with c.http.post(c.owui.base + "/api/v1/pipelines/upload", data=form, headers=c.owui.headers()) as r:
        return r.status, await r.text()


@scenario
async def a_pipeline_added_through_open_webui_runs_sandboxed(c):
    """A component built from the Python kit's filter, added by https URL ("Install from GitHub
    URL"); the kit's pipe uploaded as a .py file (built by sluice with componentize-py); both
    used in chats; the pipe's HTTP refused until the admin allows the host; both deleted."""
    _, failed = await asyncio.to_thread(c.building.communicate)
    assert c.building.returncode == 0, failed.decode(errors="replace")[-1500:]
    url = f"https://127.0.0.1:{c.https_port}/word_filter.wasm"
    _, added = await c.owui.call("POST", "/api/v1/pipelines/add", {"url": url, "urlIdx": 0}, expect=200)
    c.show("added", added)
    _, pipelines = await c.owui.call("GET", "/api/v1/pipelines/?urlIdx=0", expect=200)
    assert {"id": "word_filter", "type": "filter"}.items() <= {
        k: v for p in pipelines["data"] if p["id"] == "word_filter" for k, v in p.items()}.items(), pipelines
    await c.owui.call("GET", "/api/models", expect=200)
    message, error = await chat_error(c, "please say the forbidden word")
    assert "blocked word" in error, message
    _, _, _, fine, _ = await c.owui.ui_chat("openai_responses.gpt-4.1", "an innocent question")
    assert not fine.get("error") and answer_text(fine), fine

    status, text = await upload_through_open_webui(c, ROOT / "guests/python/examples/echo_pipe.py")
    assert status == 200, (status, text)
    _, models = await c.owui.call("GET", "/api/models", expect=200)
    assert "echo_pipe" in [m["id"] for m in models["data"]], models
    _, _, _, echoed, _ = await c.owui.ui_chat("echo_pipe", "hello from the sandbox")
    assert answer_text(echoed).strip() == "hello from the sandbox", echoed

    # Code at a module's top level runs while componentize-py builds it: it must find nothing
    # of the host there (a red team's upload wrote a .pth into the host's site-packages, run
    # by every later python3). The probe fails the build if any directory besides the kit (/0)
    # and the upload (/1) is on its path, or if the compiler was handed sluice's environment.
    probe = textwrap.dedent("""
        import os
        _given = {"/python", "/world", "/0", "/1", "/bundled"}
        _host = [p for p in os.environ.get("PYTHONPATH", "").split(":") if p and p not in _given and os.path.exists(p)]
        _host += [d for d in ("/2", "/3", "/4") if os.path.exists(d)]
        assert not _host, f"host directories reachable at build time: {_host}"
        assert not any(k.startswith(("SLUICE_", "OPENAI_")) for k in os.environ), sorted(os.environ)
    """) + (ROOT / "guests/python/examples/echo_pipe.py").read_text()
    form = aiohttp.FormData()
    form.add_field("file", probe.encode(), filename="build_probe.py", content_type="text/x-python")
    async with c.http.post(f"{c.sluice_url}/pipelines/upload", data=form,
                           headers={"Authorization": f"Bearer {SLUICE_KEY}"}) as r:
        assert r.status == 200, (r.status, await r.text())
    async with c.http.delete(f"{c.sluice_url}/pipelines/delete", json={"id": "build_probe"},
                             headers={"Authorization": f"Bearer {SLUICE_KEY}"}) as r:
        assert r.status == 200, (r.status, await r.text())

    # Its HTTP goes nowhere until the admin lists the host in ALLOWED_HOSTS.
    _, values = await c.owui.call("GET", "/api/v1/pipelines/echo_pipe/valves?urlIdx=0", expect=200)
    update = {**values, "UPSTREAM_URL": c.relay_url}
    await c.owui.call("POST", "/api/v1/pipelines/echo_pipe/valves/update?urlIdx=0", update, expect=200)
    _, _, _, refused, _ = await c.owui.ui_chat("echo_pipe", "relay this")
    assert "HttpRequestDenied" in json.dumps(refused.get("error") or refused.get("content")), refused
    assert "outbound HTTP refused" in c.sluice.text()
    host = c.relay_url.split("/")[2]
    await c.owui.call("POST", "/api/v1/pipelines/echo_pipe/valves/update?urlIdx=0",
                      {**update, "ALLOWED_HOSTS": [host]}, expect=200)
    _, _, _, relayed, _ = await c.owui.ui_chat("echo_pipe", "relay this")
    assert answer_text(relayed) == "relayed through wasi:http", relayed

    for pipeline_id in ("word_filter", "echo_pipe"):
        await c.owui.call("DELETE", "/api/v1/pipelines/delete", {"id": pipeline_id, "urlIdx": 0}, expect=200)
    _, pipelines = await c.owui.call("GET", "/api/v1/pipelines/?urlIdx=0", expect=200)
    assert not {"word_filter", "echo_pipe"} & {p["id"] for p in pipelines["data"]}, pipelines


async def main(args) -> int:
    work = pathlib.Path(tempfile.mkdtemp(prefix="sluice-e2e-"))
    procs = []
    runners = []
    results = Results()
    try:
        c = Ctx()
        c.owui = None
        c.owui_version = tuple(int(p) for p in OWUI_VERSION.split(".")[:3])
        c.verbose = args.verbose
        c.openai, c.openpipe = MockOpenAI(), MockOpenPipe()
        openai_port, openpipe_port, sluice_port, owui_port = free_port(), free_port(), free_port(), free_port()
        oa = web.Application(client_max_size=64 << 20)
        oa.router.add_post("/v1/responses", c.openai.responses)
        oa.router.add_post("/relay/v1/chat/completions", relayed_chat)
        c.relay_url = f"http://127.0.0.1:{openai_port}/relay/v1"
        runners.append(await serve(oa, openai_port))
        op = web.Application(client_max_size=64 << 20)
        op.router.add_post("/api/v1/report", c.openpipe.report)
        op.router.add_get("/api/v1/datasets", c.openpipe.list_datasets)
        op.router.add_post("/api/v1/datasets", c.openpipe.create_dataset)
        op.router.add_post("/api/v1/datasets/{id}/entries", c.openpipe.add_entries)
        runners.append(await serve(op, openpipe_port))

        # Where pipelines are added from: https with a certificate sluice is told to trust.
        tls = test_ca(work, "IP:127.0.0.1")
        cert = work / "certs" / "ca.pem"
        c.served, c.https_port, c.componentize_py = work / "served", free_port(), args.componentize_py
        c.served.mkdir()
        # Built while Open WebUI starts: the kit's filter, as an author builds it.
        c.building = subprocess.Popen(
            [str(ROOT / "guests/python/build.sh"), str(ROOT / "guests/python/examples/word_filter.py"),
             str(c.served / "word_filter.wasm")],
            env={**os.environ, "COMPONENTIZE_PY": args.componentize_py}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        files = web.Application()
        files.router.add_static("/", c.served)
        files_runner = web.AppRunner(files, access_log=None)
        await files_runner.setup()
        await web.TCPSite(files_runner, "127.0.0.1", c.https_port, ssl_context=tls).start()
        runners.append(files_runner)

        (work / "valves").mkdir()
        (work / "sluice-data").mkdir()
        base_env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
        sluice_env = {
            **base_env,
            "SLUICE_HOST": "127.0.0.1", "SLUICE_PORT": str(sluice_port), "SLUICE_API_KEY": SLUICE_KEY,
            "SLUICE_DATA_DIR": str(work / "sluice-data"), "SLUICE_VALVES_DIR": str(work / "valves"),
            "SLUICE_LOG_LEVEL": "info", "SLUICE_LOG_FORMAT": "json",
            "OPENAI_API_KEY": OPENAI_KEY, "OPENAI_API_BASE_URL": f"http://127.0.0.1:{openai_port}/v1",
            "SLUICE_VALVES__OPENAI_RESPONSES__FETCH_MODELS": "false",
            "SLUICE_VALVES__OPENAI_RESPONSES__MAX_RETRIES": "1",
            "SLUICE_VALVES__OPENAI_RESPONSES__REASONING_SUMMARY": "auto",
            "SLUICE_VALVES__OPENAI_RESPONSES__PERSIST_REASONING_TOKENS": "conversation",
            "OPENPIPE_API_KEY": OPENPIPE_KEY, "OPENPIPE_BASE_URL": f"http://127.0.0.1:{openpipe_port}/api/v1",
            "SLUICE_WASM_FETCH_CA_FILE": str(cert), "SLUICE_COMPONENTIZE_PY": args.componentize_py,
            # Reported turns are kept, so a chat can be added to a dataset afterwards.
            "SLUICE_VALVES__OPENPIPE_REPORTING__DATASET_TURNS_KEEP_DAYS": "7",
            # What an operator of Open WebUI before 0.10 sets (README, supported versions): API
            # callers' chats get no outlet there.
            "SLUICE_VALVES__OPENPIPE_REPORTING__REPORT_API_CHATS_FROM_ANSWERS":
                "true" if c.owui_version < (0, 10) else "false",
        }
        c.sluice_env = sluice_env
        c.sluice_bin = args.sluice
        c.sluice = Process("sluice", [args.sluice], sluice_env, work / "sluice.log")
        procs.append(c.sluice)
        c.sluice_url = f"http://127.0.0.1:{sluice_port}"

        owui_env = {
            **base_env,
            "DATA_DIR": str(work / "owui-data"), "OFFLINE_MODE": "true", "HF_HUB_OFFLINE": "1",
            "ENABLE_OLLAMA_API": "false", "ENABLE_OPENAI_API": "true",
            "OPENAI_API_BASE_URLS": c.sluice_url, "OPENAI_API_KEYS": SLUICE_KEY,
            "WEBUI_SECRET_KEY": uuid.uuid4().hex, "WEBUI_AUTH": "true",
            "SCARF_NO_ANALYTICS": "true", "DO_NOT_TRACK": "true", "ANONYMIZED_TELEMETRY": "false",
            "ENABLE_VERSION_UPDATE_CHECK": "false", "PORT": str(owui_port),
            # An admin's API key is what sluice reads attached files with.
            "ENABLE_API_KEYS": "true",
        }
        (work / "owui-data").mkdir()
        c.owui_proc = Process("open-webui", [args.open_webui, "serve", "--host", "127.0.0.1", "--port", str(owui_port)],
                              owui_env, work / "open-webui.log")
        procs.append(c.owui_proc)

        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await wait_http(session, c.sluice_url + "/", 30)
            await wait_http(session, f"http://127.0.0.1:{owui_port}/health", 240)
            c.http = session
            c.owui = OpenWebUI(session, f"http://127.0.0.1:{owui_port}", c.owui_version)
            _, served = await c.owui.call("GET", "/api/version", expect=200)
            assert served["version"] == OWUI_VERSION, served
            print(f"Open WebUI {OWUI_VERSION}", flush=True)
            _, signed = await c.owui.call("POST", "/api/v1/auths/signup",
                                          {"name": "Admin Person", "email": "admin@example.com", "password": "e2e-Pass-1234"},
                                          expect=200)
            c.owui.token = signed["token"]
            if c.owui_version < (0, 10):
                await c.owui.socket.connect(c.owui.base, c.owui.token)
            for fn in SCENARIOS:
                if args.only and args.only not in fn.__name__:
                    continue
                log_offset = len(c.sluice.text())
                await results.scenario(fn.__name__, fn(c), args.verbose)
                if args.calls:
                    await asyncio.sleep(0.5)
                    for call in calls_since(c.sluice.text(), log_offset):
                        print(f"    {call}", flush=True)
    except Exception as e:
        results.harness_failed(e)
    finally:
        if c.owui is not None:
            await c.owui.socket.close()
        for p in reversed(procs):
            p.stop()
        for r in runners:
            await r.cleanup()
        if results.count(False) and args.keep_logs:
            print(f"logs kept in {work}")
        else:
            results.show_logs(procs, 40)
            shutil.rmtree(work, ignore_errors=True)
    return results.finish(args.only)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--sluice", required=True)
    parser.add_argument("--open-webui", required=True)
    parser.add_argument("--componentize-py", required=True, help="builds the Python pipelines of the WebAssembly scenario")
    parser.add_argument("--only", default="")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--calls", action="store_true", help="list the requests sluice handled per scenario")
    sys.exit(asyncio.run(main(parser.parse_args())))
