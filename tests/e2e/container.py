#!/usr/bin/env python3
"""The container image, run with podman as an operator runs it: the static binary in an empty
image, its volumes, its health check, its user, and every outbound path by host name (OpenAI
over TLS with a certificate of a test CA, OpenPipe, PostgreSQL), then the compose file's
sluice service as the file defines it. The upstreams are the mocks of e2e.py on the host; the
containers share the host's network and find them by names given with --add-host, so each
name goes through the image's own resolver (no glibc NSS in the image).

Prints one PASS/FAIL line per scenario and `N passed, M failed`. Run through
tests/container/run.sh, which builds the image first.
"""

import argparse
import asyncio
import json
import os
import pathlib
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import uuid

import aiohttp
import openai
import yaml
from aiohttp import web

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import clients  # noqa: E402  (the openai SDK scenarios)
import e2e  # noqa: E402  (the mocks)

ROOT = pathlib.Path(__file__).resolve().parents[2]
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs"]
# runc on this kind of machine refuses podman's default rlimits without explicit values.
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
HOSTS = ["--add-host", "openai.test:127.0.0.1", "--add-host", "openpipe.test:127.0.0.1",
         "--add-host", "pg.test:127.0.0.1"]
RUN_ID = uuid.uuid4().hex[:8]

SCENARIOS = []


def scenario(fn):
    SCENARIOS.append(fn)
    return fn


def podman(*args, check=True, timeout=120):
    run = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check and run.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:3])}: exit {run.returncode}: {run.stderr.strip()[-800:]}")
    return run


class Ctx:
    pass


class Container:
    """One `podman run -d` of the image with the host's network."""

    def __init__(self, c, name, env, volumes=(), extra=()):
        self.name = f"sluice-test-{name}-{RUN_ID}"
        self.port = e2e.free_port()
        args = ["run", "-d", "--name", self.name, "--network", "host", *LIMITS, *HOSTS,
                "-v", f"{c.work / 'certs'}:/certs:ro", "-e", "SSL_CERT_FILE=/certs/ca.pem",
                "-e", f"SLUICE_PORT={self.port}", *extra]
        for key, value in env.items():
            args += ["-e", f"{key}={value}"]
        for volume in volumes:
            args += ["-v", volume]
        podman(*args, c.image)
        c.containers.append(self.name)
        self.url = f"http://127.0.0.1:{self.port}"

    async def ready(self, seconds=30):
        async with aiohttp.ClientSession() as session:
            try:
                await e2e.wait_http(session, self.url + "/", seconds)
            except Exception:
                raise AssertionError(f"{self.name} did not answer GET /:\n{self.logs()[-2000:]}")

    def logs(self) -> str:
        run = podman("logs", self.name, check=False)
        return run.stdout + run.stderr

    def pid(self) -> int:
        return int(podman("inspect", "--format", "{{.State.Pid}}", self.name).stdout.strip())


def volume_path(name: str) -> pathlib.Path:
    return pathlib.Path(podman("volume", "inspect", "--format", "{{.Mountpoint}}", name).stdout.strip())


def upstream_env(c) -> dict:
    return {"OPENAI_API_KEY": e2e.OPENAI_KEY, "OPENAI_API_BASE_URL": f"https://openai.test:{c.openai_port}/v1",
            "OPENPIPE_API_KEY": e2e.OPENPIPE_KEY, "OPENPIPE_BASE_URL": f"http://openpipe.test:{c.openpipe_port}/api/v1",
            "SLUICE_VALVES__OPENAI_RESPONSES__FETCH_MODELS": "false",
            "SLUICE_VALVES__OPENAI_RESPONSES__MAX_RETRIES": "1",
            "SLUICE_VALVES__OPENAI_RESPONSES__REASONING_SUMMARY": "auto"}


@scenario
async def the_image_is_one_static_binary_run_by_a_numeric_user(c):
    inspect = json.loads(podman("image", "inspect", c.image).stdout)[0]
    config = inspect["Config"]
    assert config.get("User") == "10001:10001", config.get("User")
    assert "9099/tcp" in (config.get("ExposedPorts") or {}), config.get("ExposedPorts")
    assert set(config.get("Volumes") or {}) == {"/app/valves", "/app/data"}, config.get("Volumes")
    health = inspect.get("Healthcheck") or {}
    assert health.get("Test") == ["CMD", "/usr/local/bin/sluice", "healthcheck"], health
    assert health.get("Interval") == 10_000_000_000, "the first probe comes within 10 s"
    size = int(inspect["Size"])
    c.image_size = size
    print(f"    image size: {size / 1e6:.1f} MB", flush=True)
    # About half is the WebAssembly runtime (wasmtime with its Cranelift compiler).
    assert size < 45_000_000, f"{size} bytes"
    shell = podman("run", "--rm", *LIMITS, "--entrypoint", "/bin/sh", c.image, "-c", "true", check=False)
    assert shell.returncode != 0, "the image has a shell"


@scenario
async def first_start_generates_a_key_into_the_data_volume(c):
    data, valves = f"sluice-data-{RUN_ID}", f"sluice-valves-{RUN_ID}"
    c.volumes += [data, valves]
    box = Container(c, "main", upstream_env(c), [f"{data}:/app/data", f"{valves}:/app/valves"])
    c.main = box
    await box.ready()
    key_file = volume_path(data) / "api_key"
    c.key = key_file.read_text().strip()
    c.client = openai.OpenAI(base_url=box.url + "/v1", api_key=c.key)
    c.base_url = box.url + "/v1"
    assert c.key.startswith("sk-sluice-"), c.key[:12]
    logs = box.logs()
    assert "generated and saved to this file" in logs, logs[-1500:]
    assert c.key not in logs, "the generated key reached the container's log"
    status = open(f"/proc/{box.pid()}/status").read()
    uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
    assert uid == "10001", f"runs as uid {uid}"
    health = podman("healthcheck", "run", box.name, check=False)
    assert health.returncode == 0, f"health check: {health.stdout} {health.stderr}"


@scenario
async def openai_clients_through_tls_by_host_name(c):
    """The openai SDK scenarios of clients.py against the container: the upstream is
    https://openai.test with a certificate of this run's CA."""
    for fn in [clients.readme_create_without_stream, clients.readme_streaming_loop,
               clients.every_chunk_validates_strictly, clients.a_tool_round_with_parallel_calls]:
        saved = e2e.SLUICE_KEY
        e2e.SLUICE_KEY = c.key  # clients.py reads the key from there
        try:
            await asyncio.get_running_loop().run_in_executor(None, fn, c)
        finally:
            e2e.SLUICE_KEY = saved


@scenario
async def a_certificate_of_an_unknown_ca_is_refused(c):
    """Without this run's CA (the image's own bundle only), the same upstream is refused: TLS
    is verified, not merely spoken."""
    box = Container(c, "noca", {**upstream_env(c), "SLUICE_API_KEY": "sk-noca"}, extra=["-e", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"])
    await box.ready()
    client = openai.OpenAI(base_url=box.url + "/v1", api_key="sk-noca", max_retries=0)
    try:
        await asyncio.to_thread(client.chat.completions.create, model=clients.MODEL, messages=clients.ask("hi"))
    except openai.APIStatusError as e:
        assert e.status_code in (502, 503), e
        assert "certificate" in box.logs().lower() or "certificate" in str(e).lower(), f"{e}\n{box.logs()[-1200:]}"
        return
    raise AssertionError("an upstream with a certificate of an unknown CA was trusted")


@scenario
async def reports_reach_openpipe_by_host_name(c):
    user = {"id": "u-1", "email": "a@example.com", "name": "A", "role": "user"}
    body = {"model": "openai_responses.gpt-4.1", "chat_id": "chat-c", "id": "m-c", "messages": [
        {"id": "q-c", "role": "user", "content": "hello"}, {"id": "m-c", "role": "assistant", "content": "hi"}]}
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {c.key}"}) as s:
        async with s.post(c.main.url + "/openpipe_reporting/filter/outlet", json={"user": user, "body": body}) as r:
            assert r.status == 200, await r.text()
    deadline = time.time() + 20
    while time.time() < deadline and not c.openpipe.reports:
        await asyncio.sleep(0.2)
    assert c.openpipe.reports, f"no report arrived:\n{c.main.logs()[-1500:]}"


@scenario
async def a_valves_update_survives_a_restart(c):
    headers = {"Authorization": f"Bearer {c.key}"}
    async with aiohttp.ClientSession(headers=headers) as s:
        async with s.post(c.main.url + "/openpipe_reporting/valves/update", json={"TIMEOUT_SECONDS": 21}) as r:
            assert r.status == 200, await r.text()
    started = time.time()
    podman("stop", "-t", "40", c.main.name)
    took = time.time() - started
    assert took < 10, f"stopping took {took:.1f} s"
    code = podman("inspect", "--format", "{{.State.ExitCode}}", c.main.name).stdout.strip()
    assert code == "0", f"exit code {code}"
    podman("start", c.main.name)
    await c.main.ready()
    async with aiohttp.ClientSession(headers=headers) as s:
        async with s.get(c.main.url + "/openpipe_reporting/valves") as r:
            assert r.status == 200, f"the key changed across the restart: {r.status}"
            assert (await r.json())["TIMEOUT_SECONDS"] == 21


@scenario
async def a_webassembly_pipeline_runs_in_the_image(c):
    """A component built from the Python kit, uploaded to the running image, is compiled there
    (cached in the data volume) and answers its inlet; a .py file is refused with how to build
    it elsewhere, since the image carries no componentize-py."""
    wasm = c.work / "word_filter.wasm"
    compiler = pathlib.Path(sys.executable).parent / "componentize-py"
    subprocess.run([str(ROOT / "guests/python/build.sh"), str(ROOT / "guests/python/examples/word_filter.py"), str(wasm)],
                   env={**os.environ, "COMPONENTIZE_PY": str(compiler)}, check=True, capture_output=True)
    headers = {"Authorization": f"Bearer {c.key}"}
    timeout = aiohttp.ClientTimeout(total=180)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as s:
        for name, data, status, says in [
            ("word_filter.wasm", wasm.read_bytes(), 200, "added from word_filter.wasm"),
            ("word_filter.py", (ROOT / "guests/python/examples/word_filter.py").read_bytes(), 400, "componentize-py"),
        ]:
            form = aiohttp.FormData()
            form.add_field("file", data, filename=name, content_type="application/octet-stream")
            async with s.post(c.main.url + "/pipelines/upload", data=form) as r:
                text = await r.text()
                assert r.status == status and says in text, (name, r.status, text, c.main.logs()[-1500:])
        body = {"model": "m", "messages": [{"role": "user", "content": "a forbidden thing"}]}
        async with s.post(c.main.url + "/word_filter/filter/inlet", json={"body": body, "user": None}) as r:
            assert r.status == 400 and "blocked word" in await r.text(), (r.status, await r.text())
        body["messages"][0]["content"] = "fine"
        async with s.post(c.main.url + "/word_filter/filter/inlet", json={"body": body, "user": None}) as r:
            assert r.status == 200 and (await r.json())["metadata"]["word_filter"] == "checked", await r.text()
        async with s.delete(c.main.url + "/pipelines/delete", json={"id": "word_filter"}) as r:
            assert r.status == 200, await r.text()


@scenario
async def postgresql_by_host_name(c):
    if not c.pg_url:
        raise AssertionError("no TEST_PG_URL: tests/container/run.sh starts one")
    database = f"sluice_container_{RUN_ID}"
    subprocess.run(["psql", c.pg_url, "-c", f"CREATE DATABASE {database}"], check=True, capture_output=True)
    port = c.pg_url.rsplit(":", 1)[1].split("/")[0]
    env = {**upstream_env(c), "SLUICE_API_KEY": "sk-container-pg",
           "SLUICE_STORE_URL": f"postgres://sluice@pg.test:{port}/{database}"}
    box = Container(c, "pg", env)
    await box.ready()
    assert 'store opened store="postgres"' in box.logs(), box.logs()[-1500:]


@scenario
async def the_compose_service_starts_as_the_file_defines_it(c):
    """docker-compose.yml's sluice service, as podman-compose renders it (no Docker engine
    here): its environment from a .env, its named volumes, its grace period; healthy, and a
    valves save from Open WebUI lands in the sluice-valves volume."""
    work = c.work / "compose"
    work.mkdir()
    shutil.copy(ROOT / "docker-compose.yml", work)
    (work / ".env").write_text(f"SLUICE_API_KEY=sk-compose-test\nWEBUI_SECRET_KEY=w-{RUN_ID}\n")
    rendered = subprocess.run([c.compose, "-f", "docker-compose.yml", "config"], cwd=work, capture_output=True,
                              text=True, check=True).stdout
    service = yaml.safe_load(rendered)["services"]["sluice"]
    env = dict(service.get("environment") or {})
    assert env.get("OPENAI_API_KEY", "") == "" and env["SLUICE_API_KEY"] == "sk-compose-test", env
    assert service.get("stop_grace_period") in ("40s", 40), service.get("stop_grace_period")
    volumes = []
    for v in service.get("volumes") or []:
        source, target = (v.split(":")[:2] if isinstance(v, str) else (v["source"], v["target"]))
        assert not source.startswith((".", "/")), f"a host directory mounted: {v}"
        name = f"compose-{source}-{RUN_ID}"
        c.volumes.append(name)
        volumes.append(f"{name}:{target}")
    env.update({"OPENAI_API_BASE_URL": f"https://openai.test:{c.openai_port}/v1"})
    box = Container(c, "compose", env, volumes)
    await box.ready()
    health = podman("healthcheck", "run", box.name, check=False)
    assert health.returncode == 0, health.stderr
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer sk-compose-test"}) as s:
        async with s.post(box.url + "/openai_responses/valves/update", json={"MAX_RETRIES": 3}) as r:
            assert r.status == 200, f"a valves save failed: {r.status} {await r.text()}"
        async with s.get(box.url + "/openai_responses/valves/spec") as r:
            spec = await r.json()
    assert "readOnly" not in spec["properties"]["API_KEY"], "an empty OPENAI_API_KEY locked the valve"
    valves = volume_path(f"compose-sluice-valves-{RUN_ID}")
    assert "MAX_RETRIES = 3" in (valves / "openai_responses.toml").read_text()
    subprocess.run([c.compose, "-f", "docker-compose.replicas.yml", "config"], cwd=ROOT, capture_output=True,
                   text=True, check=True, env={**os.environ, "SLUICE_API_KEY": "k", "WEBUI_SECRET_KEY": "w"})


async def main(args) -> int:
    work = pathlib.Path(tempfile.mkdtemp(prefix="sluice-container-"))
    c = Ctx()
    c.work, c.image, c.compose, c.pg_url = work, args.image, args.compose, os.environ.get("TEST_PG_URL", "")
    c.containers, c.volumes, results, runners = [], [], e2e.Results(), []
    try:
        tls = e2e.test_ca(work, "DNS:openai.test")
        c.openai = clients.MockOpenAI()
        c.openpipe = e2e.MockOpenPipe()
        c.openai_port, c.openpipe_port = e2e.free_port(), e2e.free_port()
        oa = web.Application(client_max_size=64 << 20)
        oa.router.add_post("/v1/responses", c.openai.responses)
        runner = web.AppRunner(oa, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", c.openai_port, ssl_context=tls).start()
        runners.append(runner)
        op = web.Application()
        op.router.add_post("/api/v1/report", c.openpipe.report)
        runners.append(await e2e.serve(op, c.openpipe_port))
        await results.run(SCENARIOS, c, args, limit=1500)
    except Exception as e:
        results.harness_failed(e)
    finally:
        for name in c.containers:
            podman("rm", "-f", "-t", "2", name, check=False)
        for name in c.volumes:
            podman("volume", "rm", "-f", name, check=False)
        for r in runners:
            await r.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    return results.finish(args.only)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--image", required=True)
    parser.add_argument("--compose", required=True, help="podman-compose, to render the compose files")
    parser.add_argument("--only", default="")
    parser.add_argument("--verbose", action="store_true")
    sys.exit(asyncio.run(main(parser.parse_args())))
