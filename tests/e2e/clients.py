#!/usr/bin/env python3
"""Other OpenAI clients against sluice: the official `openai` package, LiteLLM and LangChain
used as their READMEs show, against sluice with the manifold on the mock OpenAI
Responses server of e2e.py. No Open WebUI: these clients call sluice directly.

Prints one PASS/FAIL line per scenario and `N passed, M failed`. Run through tests/e2e/run.sh.
"""

import argparse
import asyncio
import json
import os
import pathlib
import sys
import tempfile

import aiohttp
import httpx
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch from GitHub
import openai
from aiohttp import web
from openai.types.chat import ChatCompletion, ChatCompletionChunk

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import e2e  # noqa: E402  (the mocks and process helpers)

PLAIN = "Bonjour! Ça va ? Comment puis-je vous aider ?"
MODEL = "openai_responses.gpt-4.1"
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                   "required": ["city", "unit"], "additionalProperties": False}}}]


class MockOpenAI(e2e.MockOpenAI):
    """e2e's mock, plus a spent quota."""

    async def responses(self, request: web.Request):
        body = await request.json()
        if "e2e:quota" in e2e.user_text(body):
            self.requests.append(body)
            return web.json_response(
                {"error": {"message": "You exceeded your current quota, please check your plan and billing details.",
                           "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}},
                status=429)

        # e2e's handler reads the body again: hand it a request that still has it.
        class Again:
            headers = request.headers

            @staticmethod
            async def json():
                return body
        return await super().responses(Again)


SCENARIOS = []


def scenario(fn):
    SCENARIOS.append(fn)
    return fn


def ask(text):
    return [{"role": "user", "content": text}]


@scenario
def readme_create_without_stream(c):
    completion = c.client.chat.completions.create(model=MODEL, messages=ask("e2e:plain hello"))
    assert isinstance(completion, ChatCompletion), type(completion)
    assert completion.choices[0].message.content == PLAIN, completion
    assert completion.usage and completion.usage.total_tokens == 37, completion.usage


@scenario
def readme_streaming_loop(c):
    stream = c.client.chat.completions.create(model=MODEL, messages=ask("e2e:plain hello"), stream=True)
    text = ""
    for chunk in stream:
        text += chunk.choices[0].delta.content or ""
    assert text == PLAIN, text


@scenario
def stream_with_usage_when_asked(c):
    chunks = list(c.client.chat.completions.create(
        model=MODEL, messages=ask("e2e:plain hello"), stream=True, stream_options={"include_usage": True}))
    usage = [ch for ch in chunks if ch.usage]
    assert len(usage) == 1 and usage[0].choices == [] and usage[0].usage.total_tokens == 37, chunks[-2:]
    assert all(ch.choices for ch in chunks if not ch.usage)


@scenario
def stream_helper(c):
    with c.client.chat.completions.stream(model=MODEL, messages=ask("e2e:reasoning 17 x 23")) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    assert final.choices[0].message.content.endswith("17 × 23 = **391**."), final


@scenario
def async_client(c):
    async def run():
        client = openai.AsyncOpenAI(base_url=c.base_url, api_key=e2e.SLUICE_KEY)
        completion = await client.chat.completions.create(model=MODEL, messages=ask("e2e:plain hello"))
        text = ""
        async for chunk in await client.chat.completions.create(model=MODEL, messages=ask("e2e:plain hi"), stream=True):
            text += chunk.choices[0].delta.content or ""
        await client.close()
        return completion.choices[0].message.content, text
    whole, streamed = asyncio.run(run())
    assert whole == streamed == PLAIN, (whole, streamed)


@scenario
def every_chunk_validates_strictly(c):
    """Each raw `data:` line against the SDK's own type, strict, for a text, a reasoning and a
    tool-call answer, with usage."""
    for model, said, extra in [
        (MODEL, "e2e:plain hello", {}),
        ("openai_responses.o4-mini", "e2e:reasoning 17 x 23", {}),
        ("openai_responses.gpt-5-mini", "e2e:tool Weather in Paris and London?", {"tools": TOOLS}),
        (MODEL, "e2e:citation latest news", {}),
    ]:
        body = {"model": model, "messages": ask(said), "stream": True,
                "stream_options": {"include_usage": True}, **extra}
        with httpx.stream("POST", c.base_url + "/chat/completions", json=body, timeout=30,
                          headers={"Authorization": f"Bearer {e2e.SLUICE_KEY}"}) as r:
            assert r.status_code == 200, r.status_code
            lines = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        assert lines[-1] == "[DONE]", lines[-1]
        for line in lines[:-1]:
            ChatCompletionChunk.model_validate_json(line, strict=True)
            assert "[sluice:" not in line and '"event"' not in line, line


@scenario
def citations_as_annotations(c):
    """Web-search sources reach an OpenAI client as the SDK's own `url_citation` annotations."""
    completion = c.client.chat.completions.create(model=MODEL, messages=ask("e2e:citation latest news"))
    annotations = completion.choices[0].message.annotations or []
    assert annotations and all(a.type == "url_citation" and a.url_citation.url.startswith("http")
                               for a in annotations), completion.choices[0].message


@scenario
def a_tool_round_with_parallel_calls(c):
    before = len(c.openai.requests)
    messages = ask("e2e:tool Weather in Paris and London?")
    first = c.client.chat.completions.create(model="openai_responses.gpt-5-mini", messages=messages, tools=TOOLS,
                                             user="customer-1")
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls", first
    assert message.content is None, message.content
    assert len(message.tool_calls) == 2, message.tool_calls
    messages.append(message.model_dump(exclude_none=True))
    for call in message.tool_calls:
        messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temp_c": 18})})
    second = c.client.chat.completions.create(model="openai_responses.gpt-5-mini", messages=messages, tools=TOOLS,
                                              user="customer-1")
    assert "Paris" in second.choices[0].message.content, second
    sent = c.openai.requests[before:]
    assert len(sent) == 2, len(sent)
    types = [i.get("type") for i in sent[1]["input"] if isinstance(i, dict)]
    assert "reasoning" in types, f"the first round's encrypted reasoning was replayed: {types}"


def expect(error_class, fn, *needles):
    try:
        fn()
    except error_class as e:
        text = str(e)
        for needle in needles:
            assert needle in text, f"{error_class.__name__}: {text!r} lacks {needle!r}"
        return e
    raise AssertionError(f"no {error_class.__name__}")


@scenario
def every_error_reads_well(c):
    wrong = openai.OpenAI(base_url=c.base_url, api_key="sk-wrong", max_retries=2)
    expect(openai.AuthenticationError, lambda: wrong.chat.completions.create(model=MODEL, messages=ask("hi")),
           "Invalid API key")
    expect(openai.NotFoundError, lambda: c.client.chat.completions.create(model="gpt-4.1", messages=ask("hi")),
           "gpt-4.1 not found")
    expect(openai.BadRequestError,
           lambda: c.client.chat.completions.create(model=MODEL, messages=ask("hi"), n=2), "only one choice")
    expect(openai.BadRequestError,
           lambda: c.client.chat.completions.create(model=MODEL, messages=ask("hi"), stop=["\n"]), "stop")
    expect(openai.UnprocessableEntityError,
           lambda: c.client.chat.completions.create(model=MODEL, messages=[{"content": "no role"}]), "role")
    before = len(c.openai.requests)
    retrying = openai.OpenAI(base_url=c.base_url, api_key=e2e.SLUICE_KEY, max_retries=2)
    expect(openai.RateLimitError,
           lambda: retrying.chat.completions.create(model=MODEL, messages=ask("e2e:quota please")),
           "exceeded your current quota")
    calls = len(c.openai.requests) - before
    assert calls == 1, f"{calls} upstream calls for a spent quota (the client must not retry)"


@scenario
def litellm_completion(c):
    try:
        import litellm
    except ImportError:
        raise AssertionError("litellm is not installed in the e2e environment")
    kwargs = {"model": "openai/" + MODEL, "api_base": c.base_url, "api_key": e2e.SLUICE_KEY, "messages": ask("e2e:plain hi")}
    whole = litellm.completion(stream=False, **kwargs)
    assert whole.choices[0].message.content == PLAIN, whole
    text = "".join(chunk.choices[0].delta.content or "" for chunk in litellm.completion(stream=True, **kwargs))
    assert text == PLAIN, text


@scenario
def langchain_chat_model(c):
    try:
        from langchain_openai import ChatOpenAI
    except ImportError:
        raise AssertionError("langchain-openai is not installed in the e2e environment")
    llm = ChatOpenAI(model=MODEL, base_url=c.base_url, api_key=e2e.SLUICE_KEY, max_retries=0)
    whole = llm.invoke("e2e:plain hello")
    assert whole.content == PLAIN, whole
    assert whole.usage_metadata and whole.usage_metadata["total_tokens"] == 37, whole.usage_metadata
    streamed = None
    for chunk in llm.stream("e2e:plain hello"):
        streamed = chunk if streamed is None else streamed + chunk
    assert streamed.content == PLAIN, streamed
    tools = ChatOpenAI(model="openai_responses.gpt-5-mini", base_url=c.base_url, api_key=e2e.SLUICE_KEY,
                       max_retries=0).bind_tools(TOOLS)
    called = tools.invoke("e2e:tool Weather in Paris and London?")
    assert [t["name"] for t in called.tool_calls] == ["get_weather", "get_weather"], called.tool_calls
    assert {t["args"]["city"] for t in called.tool_calls} == {"Paris", "London"}, called.tool_calls


async def main(args) -> int:
    work = pathlib.Path(tempfile.mkdtemp(prefix="sluice-clients-"))
    procs, runners, results = [], [], e2e.Results()
    try:
        c = e2e.Ctx()
        c.openai = MockOpenAI()
        openai_port, sluice_port = e2e.free_port(), e2e.free_port()
        oa = web.Application(client_max_size=64 << 20)
        oa.router.add_post("/v1/responses", c.openai.responses)
        runners.append(await e2e.serve(oa, openai_port))
        (work / "valves").mkdir()
        base_env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
        env = {
            **base_env,
            "SLUICE_HOST": "127.0.0.1", "SLUICE_PORT": str(sluice_port), "SLUICE_API_KEY": e2e.SLUICE_KEY,
            "SLUICE_DATA_DIR": str(work / "data"), "SLUICE_VALVES_DIR": str(work / "valves"),
            "OPENAI_API_KEY": e2e.OPENAI_KEY, "OPENAI_API_BASE_URL": f"http://127.0.0.1:{openai_port}/v1",
            "SLUICE_VALVES__OPENAI_RESPONSES__FETCH_MODELS": "false",
            "SLUICE_VALVES__OPENAI_RESPONSES__MAX_RETRIES": "1",
            "SLUICE_VALVES__OPENAI_RESPONSES__REASONING_SUMMARY": "auto",
        }
        procs.append(e2e.Process("sluice", [args.sluice], env, work / "sluice.log"))
        c.base_url = f"http://127.0.0.1:{sluice_port}/v1"
        async with aiohttp.ClientSession() as session:
            await e2e.wait_http(session, f"http://127.0.0.1:{sluice_port}/", 30)
        c.client = openai.OpenAI(base_url=c.base_url, api_key=e2e.SLUICE_KEY)
        loop = asyncio.get_running_loop()
        for fn in SCENARIOS:
            if args.only and args.only not in fn.__name__:
                continue
            # The SDK's sync calls would block the mock's event loop: run them on a thread.
            await results.scenario(fn.__name__, loop.run_in_executor(None, fn, c), args.verbose)
    except Exception as e:
        results.harness_failed(e)
    finally:
        await results.tear_down(procs, runners, work, 30)
    return results.finish(args.only)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--sluice", required=True)
    parser.add_argument("--only", default="")
    parser.add_argument("--verbose", action="store_true")
    sys.exit(asyncio.run(main(parser.parse_args())))
