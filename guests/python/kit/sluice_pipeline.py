"""What a Python pipeline for sluice imports: a small stand-in for pydantic's BaseModel (so a
reference-style `class Valves(BaseModel)` works unchanged), the host's log and key/value store,
and outbound HTTP through wasi:http (only to the hosts the admin allowed in ALLOWED_HOSTS)."""

import json
import typing

from componentize_py_types import Err
from wit_world.imports import host, outgoing_handler, poll, streams
from wit_world.imports import wasi_http_types as http

__all__ = ["BaseModel", "Field", "log", "kv_get", "kv_set", "kv_delete", "http_request", "Response", "HttpError"]

_MISSING = object()


class _FieldInfo:
    def __init__(self, default=_MISSING, description=None, secret=False, title=None, default_factory=None):
        self.default = default
        self.default_factory = default_factory
        self.description = description
        self.secret = secret
        self.title = title

    def make_default(self):
        if self.default_factory is not None:
            return self.default_factory()
        return None if self.default is _MISSING else self.default


def Field(default=_MISSING, *, description=None, secret=False, title=None, default_factory=None, **_ignored):
    """pydantic's Field, as far as valves use it. `secret=True` masks the valve in the editor
    (pydantic's SecretStr is not available: it needs a native extension)."""
    return _FieldInfo(default, description, secret, title, default_factory)


def _json_type(annotation):
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union:
        inner = [a for a in args if a is not type(None)]
        return _json_type(inner[0]) if len(inner) == 1 else {}
    if annotation is str:
        return {"type": "string"}
    if annotation is bool:
        return {"type": "boolean"}
    if annotation is int:
        return {"type": "integer"}
    if annotation is float:
        return {"type": "number"}
    if annotation is list or origin is list:
        return {"type": "array", "items": _json_type(args[0]) if args else {}}
    if annotation is dict or origin is dict:
        return {"type": "object"}
    return {}


class BaseModel:
    """Fields are the annotated class attributes, in order; their values are the defaults."""

    @classmethod
    def _fields(cls):
        fields = {}
        for klass in reversed(cls.__mro__):
            for name, annotation in getattr(klass, "__annotations__", {}).items():
                raw = getattr(klass, name, _MISSING)
                info = raw if isinstance(raw, _FieldInfo) else _FieldInfo(raw)
                fields[name] = (annotation, info)
        return fields

    def __init__(self, **values):
        fields = type(self)._fields()
        unknown = set(values) - set(fields)
        if unknown:
            raise ValueError("unknown fields: " + ", ".join(sorted(unknown)))
        for name, (_, info) in fields.items():
            setattr(self, name, values[name] if name in values else info.make_default())

    def model_dump(self):
        return {name: getattr(self, name) for name in type(self)._fields()}

    dict = model_dump

    @classmethod
    def model_json_schema(cls):
        properties = {}
        for name, (annotation, info) in cls._fields().items():
            prop = dict(_json_type(annotation))
            prop["default"] = info.make_default()
            if info.description:
                prop["description"] = info.description
            if info.title:
                prop["title"] = info.title
            if info.secret:
                prop["format"] = "password"
                prop["writeOnly"] = True
            properties[name] = prop
        return {"type": "object", "properties": properties}


def log(message, level="info"):
    """A line in sluice's log, tagged with this pipeline's id."""
    host.log(getattr(host.Level, level.upper()), str(message))


def kv_get(key):
    """This pipeline's record under `key` in sluice's store, or None."""
    return host.kv_get(key)


def kv_set(key, value, ttl_seconds=0):
    host.kv_set(key, value, ttl_seconds)


def kv_delete(key):
    host.kv_delete(key)


class HttpError(Exception):
    """The request did not get an answer: a host not allowed, a refused connection, a timeout."""


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)


_METHODS = {
    "GET": http.Method_Get, "HEAD": http.Method_Head, "POST": http.Method_Post, "PUT": http.Method_Put,
    "DELETE": http.Method_Delete, "PATCH": http.Method_Patch, "OPTIONS": http.Method_Options,
}


def _send(method, url, headers, body):
    scheme, _, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    fields = http.Fields.from_list([(k.lower(), v.encode()) for k, v in (headers or {}).items()])
    request = http.OutgoingRequest(fields)
    request.set_method(_METHODS[method.upper()]())
    request.set_scheme(http.Scheme_Https() if scheme == "https" else http.Scheme_Http())
    request.set_authority(authority)
    request.set_path_with_query(slash + path)
    outgoing = request.body()
    try:
        future = outgoing_handler.handle(request, None)
    except Err as e:
        raise HttpError(f"{method} {url}: {e.value}")
    try:
        if body:
            data = body.encode() if isinstance(body, str) else body
            out = outgoing.write()
            for i in range(0, len(data), 4096):
                out.blocking_write_and_flush(data[i:i + 4096])
            out.__exit__(None, None, None)
        http.OutgoingBody.finish(outgoing, None)
    except Err:
        pass  # the request failed before its body went out: the answer below says why
    future.subscribe().block()
    # option<result<result<response, error-code>>>: Ok(Ok(response)), Ok(Err(code)), Err(None).
    result = future.get()
    if result is None or isinstance(result, Err):
        raise HttpError(f"{method} {url}: no answer")
    if isinstance(result.value, Err):
        raise HttpError(f"{method} {url}: {type(result.value.value).__name__.removeprefix('ErrorCode_')}")
    return result.value.value


def _chunks(response):
    incoming = response.consume()
    stream = incoming.stream()
    while True:
        try:
            chunk = stream.blocking_read(65536)
        except Err as e:
            if isinstance(e.value, streams.StreamError_Closed):
                return
            raise HttpError(f"reading the answer: {e.value}")
        if chunk:
            yield chunk


def http_request(method, url, headers=None, body=None):
    """Sends one request and reads the whole answer. Raises HttpError without an answer."""
    response = _send(method, url, headers, body)
    head = {k: v.decode("latin-1") for k, v in response.headers().entries()}
    return Response(response.status(), head, b"".join(_chunks(response)))


def http_lines(method, url, headers=None, body=None):
    """Sends one request and yields its answer line by line as it arrives (server-sent events)."""
    response = _send(method, url, headers, body)
    if response.status() >= 400:
        raise HttpError(f"{method} {url}: status {response.status()}")
    for line in _lines(_chunks(response)):
        yield line.decode("utf-8", "replace")


def _lines(chunks):
    """The lines of a stream of byte chunks, as they complete, without their line ends."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r")
    if pending:
        yield pending
