#!/usr/bin/env python3
"""Real-browser end-to-end: what an administrator and a user see in Open WebUI 0.12.4 with sluice.

Starts the mock OpenAI Responses server and the mock OpenPipe of tests/e2e/e2e.py, sluice and
Open WebUI (fresh DATA_DIR, offline), but registers nothing in Open WebUI: the scenarios
(tests/browser/scenarios.mjs, playwright-core driving headless Chromium) sign up the admin and
add the connection to sluice through the pages. Prints one PASS/FAIL line per scenario and a
final `N passed, M failed` line; exits 0 only if every scenario passed. Run through
tests/browser/run.sh, which provides Chromium, playwright-core and the Python environment.

sluice starts with neither OPENAI_API_KEY nor OPENPIPE_API_KEY in its environment: the OpenAI
key and URLs are in its valves files (so the valves REST API and the editor may change them),
the OpenPipe key is typed in Admin > Settings > Pipelines by a scenario.
"""

import argparse
import asyncio
import json
import os
import pathlib
import shutil
import signal
import sys
import tempfile
import time
import traceback
import uuid

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

import e2e  # noqa: E402
from e2e import MockOpenAI, MockOpenPipe, Process, free_port, serve, wait_http  # noqa: E402


def toml_string(s: str) -> str:
    return json.dumps(s)


async def main(args) -> int:
    work = pathlib.Path(tempfile.mkdtemp(prefix="sluice-browser-"))
    artifacts = pathlib.Path(os.environ.get("BROWSER_ARTIFACTS") or HERE / "artifacts").resolve()
    procs, runners = [], []
    status = 1
    harness_failed = False
    try:
        openai, openpipe = MockOpenAI(), MockOpenPipe()
        openai_port, openpipe_port, sluice_port, owui_port = free_port(), free_port(), free_port(), free_port()
        closed_port = free_port()  # nothing listens there: the "upstream down" scenario
        oa = web.Application(client_max_size=64 << 20)
        oa.router.add_post("/v1/responses", openai.responses)
        runners.append(await serve(oa, openai_port))
        op = web.Application(client_max_size=64 << 20)
        op.router.add_post("/api/v1/report", openpipe.report)

        async def reports(_request):
            # For the scenarios: what the mock OpenPipe received (tags only).
            return web.json_response({"attempts": openpipe.attempts, "tags": [r.get("tags") or {} for r in openpipe.reports]})

        op.router.add_get("/_test/reports", reports)
        runners.append(await serve(op, openpipe_port))

        valves = work / "valves"
        valves.mkdir()
        (work / "sluice-data").mkdir()
        # The valves files, as an operator who keeps the keys out of the environment writes them.
        (valves / "openai_responses.toml").write_text(
            f"BASE_URL = {toml_string(f'http://127.0.0.1:{openai_port}/v1')}\n"
            f"API_KEY = {toml_string(e2e.OPENAI_KEY)}\n"
            "FETCH_MODELS = false\n"
            "MAX_RETRIES = 1\n"
            'REASONING_SUMMARY = "auto"\n'
            'PERSIST_REASONING_TOKENS = "conversation"\n'
        )
        (valves / "openpipe_reporting.toml").write_text(
            f"OPENPIPE_BASE_URL = {toml_string(f'http://127.0.0.1:{openpipe_port}/api/v1')}\n"
        )
        base_env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
        sluice_env = {
            **base_env,
            "SLUICE_HOST": "127.0.0.1", "SLUICE_PORT": str(sluice_port), "SLUICE_API_KEY": e2e.SLUICE_KEY,
            "SLUICE_DATA_DIR": str(work / "sluice-data"), "SLUICE_VALVES_DIR": str(valves),
            "SLUICE_LOG_LEVEL": "info", "SLUICE_LOG_FORMAT": "json",
        }
        sluice = Process("sluice", [args.sluice], sluice_env, work / "sluice.log")
        procs.append(sluice)
        sluice_url = f"http://127.0.0.1:{sluice_port}"

        (work / "owui-data").mkdir()
        owui_env = {
            **base_env,
            "DATA_DIR": str(work / "owui-data"), "OFFLINE_MODE": "true", "HF_HUB_OFFLINE": "1",
            "ENABLE_OLLAMA_API": "false", "ENABLE_OPENAI_API": "true",
            "WEBUI_SECRET_KEY": uuid.uuid4().hex, "WEBUI_AUTH": "true",
            "SCARF_NO_ANALYTICS": "true", "DO_NOT_TRACK": "true", "ANONYMIZED_TELEMETRY": "false",
            "ENABLE_VERSION_UPDATE_CHECK": "false", "PORT": str(owui_port),
        }
        owui = Process("open-webui", [args.open_webui, "serve", "--host", "127.0.0.1", "--port", str(owui_port)],
                       owui_env, work / "open-webui.log")
        procs.append(owui)
        owui_url = f"http://127.0.0.1:{owui_port}"

        started = time.time()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            await wait_http(session, sluice_url + "/", 30)
            await wait_http(session, owui_url + "/health", 180)
        print(f"# services up in {time.time() - started:.0f} s (Open WebUI {owui_url}, sluice {sluice_url})",
              flush=True)

        config = {
            "owuiUrl": owui_url, "sluiceUrl": sluice_url, "sluiceKey": e2e.SLUICE_KEY,
            "openaiKey": e2e.OPENAI_KEY, "openpipeKey": e2e.OPENPIPE_KEY,
            "openaiBaseUrl": f"http://127.0.0.1:{openai_port}/v1", "closedPort": closed_port,
            "openpipeReports": f"http://127.0.0.1:{openpipe_port}/_test/reports",
            "artifacts": str(artifacts), "only": args.only,
            "sluiceLog": str(work / "sluice.log"), "owuiLog": str(work / "open-webui.log"),
        }
        if args.serve:
            (HERE / ".serve.json").write_text(json.dumps(config, indent=1))
            print(f"# serving; config in {HERE / '.serve.json'}; Ctrl-C (or SIGTERM) stops", flush=True)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
            status = 0
        else:
            env = {**os.environ, "SLUICE_BROWSER_CONFIG": json.dumps(config)}
            node = await asyncio.create_subprocess_exec(
                args.node, str(HERE / "scenarios.mjs"), env=env, cwd=str(HERE), start_new_session=True)
            try:
                status = await asyncio.wait_for(node.wait(), args.timeout)
            except asyncio.TimeoutError:
                print(f"FAIL harness: the scenarios did not finish in {args.timeout} s", flush=True)
                os.killpg(node.pid, signal.SIGKILL)
                await node.wait()
                harness_failed = True
                status = 1
            # What sluice sent upstream and reported, for the record.
            print(f"# mock OpenAI saw {len(openai.requests)} requests; mock OpenPipe got {len(openpipe.reports)} reports",
                  flush=True)
    except Exception as e:
        harness_failed = True
        status = 1
        print(f"FAIL harness: {e}", flush=True)
        traceback.print_exc()
    finally:
        for p in reversed(procs):
            p.stop()
        for r in runners:
            await r.cleanup()
        if status != 0:
            for p in procs:
                print(f"--- last lines of {p.name}'s log ---")
                print("\n".join(p.text().splitlines()[-20:]))
            if args.keep_logs:
                print(f"logs kept in {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if harness_failed:
        print("0 passed, 1 failed", flush=True)
    return 0 if status == 0 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--sluice", default=str(ROOT / "target" / "debug" / "sluice"))
    parser.add_argument("--open-webui", default=str(pathlib.Path.home() / ".cache/sluice-e2e/venv-0.12.4/bin/open-webui"))
    parser.add_argument("--node", default="node")
    parser.add_argument("--only", default="", help="run the scenarios whose name contains this (and those they need)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds for the scenarios as a whole")
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--serve", action="store_true", help="start everything and wait (to develop the scenarios)")
    sys.exit(asyncio.run(main(parser.parse_args())))
