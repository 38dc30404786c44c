#!/usr/bin/env python3
"""The README's commands, run as written against a started sluice (with the manifold on the
mock OpenAI of e2e.py): every ```sh block marked `readme-check` must exit 0.

Two substitutions, printed when made: `cargo run --release --` becomes the binary under test
(CI builds a debug binary; a release build would add ten minutes), and port 9099 becomes a free
one when 9099 is taken. Prints PASS/FAIL per block and `N passed, M failed`. Run through
tests/e2e/run.sh.
"""

import argparse
import asyncio
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile

import aiohttp
from aiohttp import web

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import e2e  # noqa: E402  (the mocks and process helpers)

ROOT = pathlib.Path(__file__).resolve().parents[2]


def blocks(readme: str):
    """(line, text) of every ```sh readme-check block."""
    out = []
    for m in re.finditer(r"^```sh readme-check\n(.*?)^```$", readme, re.S | re.M):
        out.append((readme[:m.start()].count("\n") + 1, m.group(1)))
    return out


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


async def main(args) -> int:
    work = pathlib.Path(tempfile.mkdtemp(prefix="sluice-readme-"))
    results, procs, runners = e2e.Results(), [], []
    try:
        found = blocks((ROOT / "README.md").read_text())
        assert found, "no readme-check block in README.md"
        shutil.copytree(ROOT / "valves", work / "valves")
        mock = e2e.MockOpenAI()
        mock_port = e2e.free_port()
        app = web.Application()
        app.router.add_post("/v1/responses", mock.responses)
        runners.append(await e2e.serve(app, mock_port))
        port = 9099 if port_is_free(9099) else e2e.free_port()
        if port != 9099:
            print(f"note: port 9099 is taken; the blocks use {port}")
        base_env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
        env = {**base_env, "SLUICE_HOST": "127.0.0.1", "SLUICE_PORT": str(port),
               "OPENAI_API_KEY": e2e.OPENAI_KEY, "OPENAI_API_BASE_URL": f"http://127.0.0.1:{mock_port}/v1",
               "SLUICE_VALVES__OPENAI_RESPONSES__FETCH_MODELS": "false"}
        sluice = str(pathlib.Path(args.sluice).resolve())
        proc = e2e.Process("sluice", [sluice], env, work / "sluice.log", cwd=work)
        procs.append(proc)
        async with aiohttp.ClientSession() as session:
            await e2e.wait_http(session, f"http://127.0.0.1:{port}/", 30)
        print(f"note: `cargo run --release --` runs {sluice}")
        for line, text in found:
            if args.only and args.only not in f"README.md:{line}":
                continue
            script = text.replace("cargo run --release --", sluice).replace(":9099", f":{port}")
            # On a thread: the mock upstream answers on this event loop.
            run = await asyncio.to_thread(
                subprocess.run, ["bash", "-euo", "pipefail", "-c", script], cwd=work,
                env={**base_env, "SLUICE_PORT": str(port)}, capture_output=True, text=True, timeout=120)
            name = f"README.md:{line}"
            if run.returncode == 0:
                results.append(True)
                print(f"PASS {name}", flush=True)
                if args.verbose:
                    print(run.stdout)
            else:
                results.append(False)
                print(f"FAIL {name}: exit {run.returncode}\n--- stdout\n{run.stdout}\n--- stderr\n{run.stderr}", flush=True)
            if "chat/completions" in text:
                ok = "Bonjour! Ça va ? Comment puis-je vous aider ?" in run.stdout
                results.append(ok)
                print(f"{'PASS' if ok else 'FAIL'} {name}: the chat answered", flush=True)
            if "valves/update" in text:
                shipped = (ROOT / "valves/openpipe_reporting.toml").read_text().splitlines()
                edited = (work / "valves/openpipe_reporting.toml").read_text().splitlines()
                at = next(i for i, l in enumerate(shipped) if l.startswith("# TIMEOUT_SECONDS ="))
                ok = edited[at] == "TIMEOUT_SECONDS = 20" and edited[0] == shipped[0]
                results.append(ok)
                print(f"{'PASS' if ok else 'FAIL'} {name}: the update replaced its commented default", flush=True)
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
