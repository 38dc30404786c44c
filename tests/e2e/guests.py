#!/usr/bin/env python3
"""The guest kits as an author uses them: each example of guests/python (built with
guests/python/build.sh and componentize-py) and guests/js (built with guests/js/build.mjs and
componentize-js) is uploaded to a running sluice as a component, deleted, added again by https
URL, then its hooks and answers are checked over HTTP, as Open WebUI would call them.

Prints one PASS/FAIL line per scenario and `N passed, M failed`. Run through tests/e2e/run.sh,
which provides the Python environment (with componentize-py) and installs guests/js's packages.
"""

import argparse
import asyncio
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import aiohttp
from aiohttp import web

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import e2e  # noqa: E402  (process helpers, Results)

ROOT = pathlib.Path(__file__).resolve().parents[2]
KEY = "guests-key-1234567890"
SCENARIOS = []


def scenario(fn):
    SCENARIOS.append(fn)
    return fn


class Ctx:
    pass


async def build(c, kit: str, name: str) -> pathlib.Path:
    """The example `name` of `kit` built as its README says (on a thread: the client's idle
    connections are looked after meanwhile)."""
    return await asyncio.to_thread(build_now, c, kit, name)


def build_now(c, kit: str, name: str) -> pathlib.Path:
    out = c.work / f"{pathlib.Path(name).stem}.wasm"
    source = ROOT / "guests" / kit / "examples" / name
    if kit == "python":
        command = [str(ROOT / "guests/python/build.sh"), str(source), str(out)]
    else:
        command = ["node", str(ROOT / "guests/js/build.mjs"), str(source), str(out)]
    run = subprocess.run(command, env={**os.environ, "COMPONENTIZE_PY": c.componentize_py},
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (run.stdout + run.stderr)[-1500:]
    return out


async def call(c, method, path, body=None, form=None):
    async with c.http.request(method, c.url + path, json=body, data=form) as r:
        text = await r.text()
        return r.status, (json.loads(text) if text.startswith(("{", "[")) else text)


async def upload(c, path: pathlib.Path):
    """Added twice, as both ways go: uploaded, deleted, then added by https URL."""
    form = aiohttp.FormData()
    form.add_field("file", path.read_bytes(), filename=path.name, content_type="application/octet-stream")
    status, answer = await call(c, "POST", "/pipelines/upload", form=form)
    assert status == 200, answer
    status, deleted = await call(c, "DELETE", "/pipelines/delete", {"id": answer["id"]})
    assert status == 200, deleted
    (c.work / "served").mkdir(exist_ok=True)
    (c.work / "served" / path.name).write_bytes(path.read_bytes())
    status, added = await call(c, "POST", "/pipelines/add", {"url": f"https://127.0.0.1:{c.tls_port}/{path.name}"})
    assert status == 200 and added["id"] == answer["id"] and "added from https://" in added["detail"], added
    return added


def hook_body(text, answer=None):
    messages = [{"role": "user", "content": text}]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return {"body": {"model": "m", "messages": messages}, "user": {"id": "u-1", "role": "user"}}


async def chat(c, model, text, stream=False):
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]}
    if not stream:
        return await call(c, "POST", "/v1/chat/completions", body)
    async with c.http.post(c.url + "/v1/chat/completions", json=body) as r:
        return r.status, await r.text()


@scenario
async def python_filter_refuses_and_edits(c):
    added = await upload(c, await build(c, "python", "word_filter.py"))
    assert added["id"] == "word_filter" and added["type"] == "filter", added
    status, refused = await call(c, "POST", "/word_filter/filter/inlet", hook_body("a forbidden word"))
    assert status == 400 and "blocked word: forbidden" in refused["detail"], (status, refused)
    status, passed = await call(c, "POST", "/word_filter/filter/inlet", hook_body("fine"))
    assert status == 200 and passed["metadata"] == {"word_filter": "checked"}, passed
    status, _ = await call(c, "POST", "/word_filter/valves/update", {"SUFFIX": " (checked)"})
    assert status == 200
    status, edited = await call(c, "POST", "/word_filter/filter/outlet", hook_body("q", "an answer"))
    assert status == 200 and edited["messages"][1]["content"] == "an answer (checked)", edited


@scenario
async def python_pipe_streams_and_relays_with_requests(c):
    await upload(c, await build(c, "python", "echo_pipe.py"))
    status, text = await chat(c, "echo_pipe", "one two three", stream=True)
    assert status == 200 and [json.loads(l[6:])["choices"][0]["delta"].get("content")
                              for l in text.splitlines() if l.startswith("data: {")][:3] == ["one", " two", " three"], text
    await call(c, "POST", "/echo_pipe/valves/update", {"UPSTREAM_URL": c.relay_url})
    status, refused = await chat(c, "echo_pipe", "relay")
    assert status == 500 and "HttpRequestDenied" in refused["detail"], (status, refused)
    await call(c, "POST", "/echo_pipe/valves/update", {"ALLOWED_HOSTS": [c.relay_url.split("/")[2]]})
    status, relayed = await chat(c, "echo_pipe", "relay")
    assert status == 200 and relayed["choices"][0]["message"]["content"] == "relayed through wasi:http", relayed
    # https from a guest: its certificate (a test CA's) is not among the roots guests trust, so
    # the request fails with a TLS error in the pipeline, and the server carries on.
    tls_host = c.tls_url.split("/")[2]
    await call(c, "POST", "/echo_pipe/valves/update", {"UPSTREAM_URL": c.tls_url, "ALLOWED_HOSTS": [tls_host]})
    status, refused = await chat(c, "echo_pipe", "relay over tls")
    assert status == 500 and "Tls" in refused["detail"], (status, refused)
    async with c.http.get(c.url + "/") as r:
        assert r.status == 200


@scenario
async def js_filter_refuses_and_edits(c):
    added = await upload(c, await build(c, "js", "shout_filter.js"))
    assert added["id"] == "shout_filter" and added["type"] == "filter", added
    status, refused = await call(c, "POST", "/shout_filter/filter/inlet", hook_body("   "))
    assert status == 400 and refused["detail"] == "the message is empty", (status, refused)
    status, passed = await call(c, "POST", "/shout_filter/filter/inlet", hook_body("hello"))
    assert status == 200 and passed["metadata"] == {"shout_filter": "shouted"}, passed
    status, edited = await call(c, "POST", "/shout_filter/filter/outlet", hook_body("q", "quiet answer"))
    assert status == 200 and edited["messages"][1]["content"] == "QUIET ANSWER", edited


@scenario
async def js_pipe_streams_and_keeps_records(c):
    await upload(c, await build(c, "js", "count_pipe.js"))
    status, first = await chat(c, "count_pipe", "4")
    assert status == 200 and first["choices"][0]["message"]["content"] == "1 2 3 4", first
    status, text = await chat(c, "count_pipe", "2", stream=True)
    contents = [json.loads(l[6:])["choices"][0]["delta"].get("content") for l in text.splitlines() if l.startswith("data: {")]
    assert status == 200 and contents[:2] == ["1 ", "2"] and text.endswith("data: [DONE]\n\n"), text
    status, valves = await call(c, "GET", "/count_pipe/valves")
    assert status == 200 and valves["MAX"] == 100 and valves["ALLOWED_HOSTS"] == [], valves


async def main(args) -> int:
    work = pathlib.Path(tempfile.mkdtemp(prefix="sluice-guests-"))
    results, procs, runners = e2e.Results(), [], []
    try:
        c = Ctx()
        c.work, c.componentize_py = work, args.componentize_py
        relay_port, port = e2e.free_port(), e2e.free_port()
        relay = web.Application()
        relay.router.add_post("/v1/chat/completions", e2e.relayed_chat)
        runners.append(await e2e.serve(relay, relay_port))
        c.relay_url = f"http://127.0.0.1:{relay_port}/v1"
        tls_port = e2e.free_port()
        secure = web.Application()
        secure.router.add_post("/v1/chat/completions", e2e.relayed_chat)
        (work / "served").mkdir()
        secure.router.add_static("/", work / "served")
        secure_runner = web.AppRunner(secure, access_log=None)
        await secure_runner.setup()
        await web.TCPSite(secure_runner, "127.0.0.1", tls_port, ssl_context=e2e.test_ca(work, "IP:127.0.0.1")).start()
        runners.append(secure_runner)
        c.tls_url, c.tls_port = f"https://127.0.0.1:{tls_port}/v1", tls_port
        base_env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
        env = {**base_env, "SLUICE_HOST": "127.0.0.1", "SLUICE_PORT": str(port), "SLUICE_API_KEY": KEY,
               "SLUICE_DATA_DIR": str(work / "data"), "SLUICE_VALVES_DIR": str(work / "valves"),
               "SLUICE_WASM_FETCH_CA_FILE": str(work / "certs" / "ca.pem")}
        (work / "valves").mkdir()
        c.sluice = e2e.Process("sluice", [args.sluice], env, work / "sluice.log")
        procs.append(c.sluice)
        c.url = f"http://127.0.0.1:{port}"
        timeout = aiohttp.ClientTimeout(total=300)
        async with aiohttp.ClientSession(timeout=timeout, headers={"Authorization": f"Bearer {KEY}"}) as session:
            c.http = session
            await e2e.wait_http(session, c.url + "/", 30)
            await results.run(SCENARIOS, c, args, limit=1500)
    except Exception as e:
        results.harness_failed(e)
    finally:
        await results.tear_down(procs, runners, work, 40)
    return results.finish(args.only)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--sluice", required=True)
    parser.add_argument("--componentize-py", required=True)
    parser.add_argument("--only", default="")
    parser.add_argument("--verbose", action="store_true")
    sys.exit(asyncio.run(main(parser.parse_args())))
