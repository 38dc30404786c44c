"""Just enough of `requests` for the calls reference pipelines make (`requests.post(url,
json=..., headers=..., stream=True)`, `raise_for_status()`, `json()`, `iter_lines()`), over
wasi:http: only to the hosts the admin listed in ALLOWED_HOSTS."""

import json as _json

from sluice_pipeline import HttpError, _chunks, _lines, _send

__all__ = ["get", "post", "request", "Response", "HTTPError", "RequestException"]


class RequestException(Exception):
    pass


class HTTPError(RequestException):
    pass


class Response:
    def __init__(self, raw, url):
        self._raw, self.url = raw, url
        self.status_code = raw.status()
        self.headers = {k: v.decode("latin-1") for k, v in raw.headers().entries()}
        self._body = None

    @property
    def ok(self):
        return self.status_code < 400

    def iter_content(self, chunk_size=None):
        if self._body is not None:
            yield self._body
            return
        for chunk in _chunks(self._raw):
            yield chunk

    @property
    def content(self):
        if self._body is None:
            self._body = b"".join(self.iter_content())
        return self._body

    @property
    def text(self):
        return self.content.decode("utf-8", "replace")

    def json(self):
        return _json.loads(self.content)

    def iter_lines(self, decode_unicode=False):
        for line in _lines(self.iter_content()):
            yield line.decode() if decode_unicode else line

    def raise_for_status(self):
        if self.status_code >= 400:
            raise HTTPError(f"{self.status_code} for url: {self.url}: {self.text[:500]}")


def request(method, url, headers=None, json=None, data=None, stream=False, timeout=None, **_ignored):
    headers = dict(headers or {})
    body = data
    if json is not None:
        body = _json.dumps(json)
        headers.setdefault("Content-Type", "application/json")
    try:
        response = Response(_send(method, url, headers, body), url)
    except HttpError as e:
        raise RequestException(str(e))
    if not stream:
        response.content
    return response


def get(url, **kwargs):
    return request("GET", url, **kwargs)


def post(url, **kwargs):
    return request("POST", url, **kwargs)
