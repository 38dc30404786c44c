"""The component's exports: turns sluice's calls into calls of the reference-style
`Pipeline` class in the author's module `user_pipeline` (the file being built)."""

import inspect
import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import guest
from wit_world.imports import sluice_pipeline_types as t

import sluice_build
import user_pipeline

HOST_VALVES = ("ALLOWED_HOSTS",)


class Rejected(Exception):
    pass


def _error(e):
    if isinstance(e, Err) and isinstance(e.value, t.Error):
        return e
    if isinstance(e, Err):  # a host call's own error the pipeline did not catch
        return Err(t.Error(t.ErrorKind.INTERNAL, f"{type(e.value).__name__}: {e.value}"))
    kind = t.ErrorKind.BAD_REQUEST if isinstance(e, (ValueError, KeyError, TypeError)) else t.ErrorKind.INTERNAL
    if type(e).__name__ == "Rejected":
        kind = t.ErrorKind.REJECTED
    return Err(t.Error(kind, f"{type(e).__name__}: {e}" if kind == t.ErrorKind.INTERNAL else str(e)))


def _run(value):
    """The value of a call that may be a coroutine: one that awaits nothing real finishes in
    one step (there is no event loop in the sandbox)."""
    if not inspect.iscoroutine(value):
        return value
    try:
        value.send(None)
    except StopIteration as done:
        return done.value
    value.close()
    raise RuntimeError("the pipeline awaited something; sluice runs hooks without an event loop")


def _instance(valves):
    pipeline = user_pipeline.Pipeline()
    klass = getattr(pipeline, "Valves", None)
    if klass is not None and valves is not None:
        own = {k: v for k, v in json.loads(valves).items() if k not in HOST_VALVES}
        pipeline.valves = klass(**own)
    return pipeline


def _kind(pipeline):
    kind = getattr(pipeline, "type", None)
    if kind in ("filter", "pipe", "manifold"):
        return kind
    return "manifold" if getattr(pipeline, "pipelines", None) else "pipe"


class Answer(guest.Answer):
    def __init__(self, items):
        self.items = items

    def next(self):
        try:
            item = next(self.items)
        except StopIteration:
            return None
        except Exception as e:  # the author's generator failed mid-answer
            return t.Event_Error(_error(e).value)
        if isinstance(item, (t.Event_Text, t.Event_Reasoning, t.Event_ToolCall, t.Event_Status, t.Event_Source,
                             t.Event_Notification, t.Event_Usage, t.Event_Finish, t.Event_Error)):
            return item
        if isinstance(item, dict) and "status" in item:
            return t.Event_Status(t.Status(str(item["status"]), bool(item.get("done", False))))
        return t.Event_Text(item if isinstance(item, str) else json.dumps(item))


class Guest(exports.Guest):
    def describe(self):
        pipeline = _instance(None)
        klass = getattr(pipeline, "Valves", None)
        models = getattr(pipeline, "pipelines", None) or []
        return json.dumps({
            "id": getattr(pipeline, "id", None) or sluice_build.ID,
            "name": getattr(pipeline, "name", None) or sluice_build.ID,
            "kind": _kind(pipeline),
            "models": [{"id": str(m["id"]), "name": str(m.get("name", m["id"]))} for m in models],
            "valves": klass.model_json_schema() if klass is not None else {"type": "object", "properties": {}},
        })

    def _hook(self, name, body, user, valves):
        pipeline = _instance(valves)
        hook = getattr(pipeline, name, None)
        if hook is None:
            return body
        try:
            out = _run(hook(json.loads(body), json.loads(user) if user else None))
        except Exception as e:
            raise _error(e)
        return json.dumps(out)

    def inlet(self, body, user, valves):
        return self._hook("inlet", body, user, valves)

    def outlet(self, body, user, valves):
        return self._hook("outlet", body, user, valves)

    def pipe(self, model, body, user, valves):
        pipeline = _instance(valves)
        request = json.loads(body)
        if user:
            request.setdefault("user", json.loads(user))
        messages = request.get("messages") or []
        user_message = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "")
        if isinstance(user_message, list):
            user_message = next((p.get("text") for p in user_message if p.get("type") == "text"), "")
        try:
            out = _run(pipeline.pipe(user_message=user_message, model_id=model, messages=messages, body=request))
        except Exception as e:
            raise _error(e)
        if isinstance(out, (str, bytes, dict)) or out is None:
            out = iter([out.decode() if isinstance(out, bytes) else out] if out is not None else [])
        return Answer(iter(out))
