"""A pipe in the reference's style that streams: echoes the user's message word by word, or,
when UPSTREAM_URL is set (and its host is in ALLOWED_HOSTS), streams an OpenAI-compatible
chat completion from there with `requests`, as reference pipelines do. It counts its answers
in sluice's store. `pydantic` and `requests` here are the kit's stand-ins (docs/wasm-pipelines.md)."""

import json
from typing import Generator, Iterator, List, Union

import requests
from pydantic import BaseModel, Field

from sluice_pipeline import kv_get, kv_set, log


class Pipeline:
    class Valves(BaseModel):
        UPSTREAM_URL: str = Field(default="", description="An OpenAI-compatible base URL, e.g. https://api.openai.com/v1")
        UPSTREAM_MODEL: str = "gpt-4o-mini"
        API_KEY: str = Field(default="", secret=True, description="Sent as a bearer token to UPSTREAM_URL")

    def __init__(self):
        self.name = "Echo"
        self.valves = self.Valves()

    def pipe(self, user_message: str, model_id: str, messages: List[dict], body: dict) -> Union[str, Generator, Iterator]:
        count = int(kv_get("answers") or "0") + 1
        kv_set("answers", str(count))
        log(f"answer {count} for {model_id}")
        if not self.valves.UPSTREAM_URL:
            return self._echo(user_message, count)
        return self._relay(messages)

    def _echo(self, text, count):
        yield {"status": "echoing", "done": False}
        for i, word in enumerate(str(text).split()):
            yield (" " if i else "") + word
        yield {"status": f"answer {count}", "done": True}

    def _relay(self, messages):
        headers = {"Authorization": f"Bearer {self.valves.API_KEY}"} if self.valves.API_KEY else {}
        r = requests.post(
            self.valves.UPSTREAM_URL.rstrip("/") + "/chat/completions",
            json={"model": self.valves.UPSTREAM_MODEL, "messages": messages, "stream": True},
            headers=headers,
            stream=True,
        )
        r.raise_for_status()
        for line in r.iter_lines():
            line = line.decode()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"][0].get("delta", {})
            if delta.get("content"):
                yield delta["content"]
