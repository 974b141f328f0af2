"""A test stand-in for the MRD storage server that Gadgetron 4 keeps noise covariances in.

The real server (``mrd-storage-server``, github.com/ismrmrd/mrd-storage-server, a Go program in
Gadgetron's conda packages) cannot be built here: its Go modules are not reachable. Deployments
run the real one (docs/gadgetron.md). This stand-in follows the real server's HTTP API as
Gadgetron's ``StorageClient`` (core/Storage.cpp) uses it, from the server's source (api/*.go):

- ``GET /healthcheck`` -> 200 and a JSON status (Gadgetron reads only the status code);
- ``POST /v1/blobs/data?subject=S[&device=D][&session=X][&name=N][&TAG=V...][&_ttl=DUR]``
  with a chunked request body -> 201 and the blob's metadata as JSON (``subject``, system
  tags, custom tags, ``lastModified``, ``expires``, ``location``, ``data``); a missing or empty
  subject, a reserved or malformed tag name, a value over 128 characters or a bad ``_ttl`` -> 400
  with ``{"error": {"code": ..., "message": ...}}``;
- ``GET /v1/blobs/data/latest?subject=S&...`` -> 200 with the newest matching blob's bytes and
  its tags as ``Mrd-Tag-*`` headers (plus ``Location``, ``Content-Type``, ``Last-Modified``,
  ``Expires``), or 404 ``EmptyResults``;
- ``GET /v1/blobs?subject=S&...[&_limit=N]`` -> 200 ``{"items": [...]}`` newest first;
- ``GET /v1/blobs/{id}-{subject}`` and ``.../data`` -> metadata or bytes, 404 when unknown.

A query matches a blob when every given tag equals one of the blob's values (tags not given
are not constrained), as the server's SQL does. Query keys are matched case-insensitively.
Blobs live in memory and are bounded in size and number (a test must never eat the host).
"""

from __future__ import annotations

import email.utils
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

MAX_BLOB_BYTES = 64 << 20
MAX_BLOBS = 1000
SYSTEM_TAGS = ("device", "name", "session")
RESERVED_TAGS = {"location", "last-modified", "lastmodified", "content-type", "contenttype"}
TAG_NAME = re.compile(r"(^[a-zA-Z][a-zA-Z0-9_\-]{0,63}$)|\$null")
GO_DURATION = re.compile(r"^(\d+(\.\d*)?(ns|us|µs|ms|s|m|h))+$")
DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class BadRequest(Exception):
    """A 400 answer: ``code`` and ``message`` as the real server words them."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Blob:
    """One stored item: key (id, subject), tags, bytes, creation and expiry times."""

    id: str
    subject: str
    tags: dict[str, list[str]]
    content_type: str | None
    data: bytes
    created: float
    expires: float | None = None
    sequence: int = 0

    def matches(self, query: dict[str, list[str]]) -> bool:
        for key, values in query.items():
            have = [self.subject] if key == "subject" else self.tags.get(key, [])
            if any(value not in have for value in values):
                return False
        return True


def _rfc3339(seconds: float) -> str:
    whole = time.gmtime(seconds)
    nanos = int(round((seconds % 1) * 1e9))
    fraction = f".{nanos:09d}".rstrip("0").rstrip(".")
    return time.strftime("%Y-%m-%dT%H:%M:%S", whole) + fraction + "Z"


def _go_duration_seconds(text: str) -> float:
    if not GO_DURATION.match(text):
        raise ValueError(f'time: invalid duration "{text}"')
    return sum(
        float(number) * DURATION_UNITS[unit]
        for number, _, unit in re.findall(r"(\d+(\.\d*)?)(ns|us|µs|ms|s|m|h)", text)
    )


@dataclass
class BlobStore:
    """The stand-in's memory: blobs in creation order, guarded by a lock."""

    blobs: list[Blob] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    counter: int = 0

    def add(self, blob: Blob) -> None:
        with self.lock:
            self.counter += 1
            blob.sequence = self.counter
            self.blobs.append(blob)
            del self.blobs[:-MAX_BLOBS]

    def search(self, query: dict[str, list[str]], limit: int = 100) -> list[Blob]:
        now = time.time()
        with self.lock:
            live = [b for b in self.blobs if b.expires is None or b.expires > now]
        found = [b for b in live if b.matches(query)]
        found.sort(key=lambda b: (b.created, b.sequence), reverse=True)
        return found[:limit]

    def get(self, blob_id: str, subject: str) -> Blob | None:
        with self.lock:
            return next((b for b in self.blobs if b.id == blob_id and b.subject == subject), None)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Go's net/http and curl speak
    server: StorageStandIn

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
        self.server.requests.append(f"{self.command} {self.path}")

    # -- helpers ---------------------------------------------------------------------------
    def _query(self) -> dict[str, list[str]]:
        query: dict[str, list[str]] = {}
        for key, value in parse_qsl(urlsplit(self.path).query, keep_blank_values=True):
            query.setdefault(key.lower(), []).append(value)
        return query

    def _base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{self.headers.get('Host', f'{host}:{port}')}/v1"

    def _info(self, blob: Blob) -> dict[str, object]:
        info: dict[str, object] = {"lastModified": _rfc3339(blob.created)}
        if blob.expires is not None:
            info["expires"] = _rfc3339(blob.expires)
        info["subject"] = blob.subject
        if blob.content_type is not None:
            info["contentType"] = blob.content_type
        for tag in SYSTEM_TAGS:
            if tag in blob.tags:
                info[tag] = blob.tags[tag][0]
        combined = f"{blob.id}-{blob.subject}"
        info["location"] = f"{self._base()}/blobs/{combined}"
        info["data"] = f"{self._base()}/blobs/{combined}/data"
        for tag, values in blob.tags.items():
            if tag not in SYSTEM_TAGS and tag != "_ttl":
                info[tag] = values[0] if len(values) == 1 else values
        return info

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, value: object) -> None:
        # Go's json.Encoder: compact, HTML not escaped, one trailing newline
        body = (json.dumps(value, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
        self._send(status, body, {"Content-Type": "application/json; charset=utf-8"})

    def _error(self, status: int, code: str, message: str) -> None:
        self._json(status, {"error": {"code": code, "message": message}})

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(data)
                if len(data) + size > MAX_BLOB_BYTES:
                    raise BadRequest("TooLarge", f"blob over {MAX_BLOB_BYTES} bytes")
                data += self.rfile.read(size)
                self.rfile.readline()  # CRLF after each chunk
        length = int(self.headers.get("Content-Length", "0"))
        if length > MAX_BLOB_BYTES:
            raise BadRequest("TooLarge", f"blob over {MAX_BLOB_BYTES} bytes")
        return self.rfile.read(length)

    def _data_response(self, blob: Blob, extra: dict[str, str] | None = None) -> None:
        headers = dict(extra or {})
        if blob.expires is not None:
            headers["Expires"] = email.utils.formatdate(blob.expires, usegmt=True)
        headers["Content-Type"] = blob.content_type or "application/octet-stream"
        headers["Last-Modified"] = email.utils.formatdate(blob.created, usegmt=True)
        for tag in SYSTEM_TAGS:
            if tag in blob.tags:
                headers[f"Mrd-Tag-{tag.capitalize()}"] = blob.tags[tag][0]
        headers["Mrd-Tag-Subject"] = blob.subject
        self.send_response(200)
        for key, value in headers.items():
            self.send_header(key, value)
        for tag, values in blob.tags.items():
            if tag not in SYSTEM_TAGS and tag != "_ttl":
                for value in values:
                    self.send_header(f"Mrd-Tag-{tag.capitalize()}", value)
        self.send_header("Content-Length", str(len(blob.data)))
        self.end_headers()
        self.wfile.write(blob.data)

    @staticmethod
    def _search_query(query: dict[str, list[str]]) -> tuple[dict[str, list[str]], int]:
        if "subject" not in query:
            raise BadRequest(
                "InvalidQuery",
                "'subject' query parameter is mandatory. To search for blobs where not "
                "associated with a subject, you can specify 'subject=$null'",
            )
        limit = 100
        if "_limit" in query:
            try:
                limit = int(query.pop("_limit")[0])
            except ValueError:
                limit = 100
            limit = limit if 0 < limit <= 100 else 100
        query.pop("_ct", None)  # one page is all a test stores
        query.pop("_at", None)
        return query, limit

    # -- routes ----------------------------------------------------------------------------
    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        try:
            if path == "/healthcheck":
                self._json(200, {"status": "OK"})
            elif path == "/v1/blobs/data/latest":
                query, _ = self._search_query(self._query())
                found = self.server.store.search(query, 1)
                if not found:
                    self._error(404, "EmptyResults", "The search returned no results.")
                    return
                location = self._info(found[0])["location"]
                self._data_response(found[0], {"Location": str(location)})
            elif path in ("/v1/blobs", "/v1/blobs/"):
                query, limit = self._search_query(self._query())
                items = [self._info(b) for b in self.server.store.search(query, limit)]
                self._json(200, {"items": items})
            elif path.startswith("/v1/blobs/"):
                rest = path[len("/v1/blobs/") :]
                combined, _, tail = rest.partition("/")
                blob = None
                if len(combined) >= 37:
                    blob = self.server.store.get(combined[:36], combined[37:])
                if blob is None or tail not in ("", "data"):
                    self._send(404, b"")
                elif tail == "data":
                    self._data_response(blob)
                else:
                    self._json(200, self._info(blob))
            else:
                self._send(404, b"")
        except BadRequest as error:
            self._error(400, error.code, str(error))

    def do_POST(self) -> None:
        if urlsplit(self.path).path != "/v1/blobs/data":
            self._send(404, b"")
            return
        try:
            blob = self._create()
        except BadRequest as error:
            self.close_connection = True  # the body may be unread
            self._error(400, error.code, str(error))
            return
        self.server.store.add(blob)
        self._json(201, self._info(blob))

    def _create(self) -> Blob:
        data = self._body()  # read first, as Go's server does: a 400 never breaks the pipe
        query = self._query()
        subject = query.pop("subject", None)
        if subject is None:
            raise BadRequest(
                "InvalidTag",
                "The subject tag is missing and must be provided. If the no subject is "
                "associated with the blob, specify `$null`",
            )
        if len(subject) != 1 or subject[0] == "":
            raise BadRequest("InvalidSubject", "the subject tag cannot be empty")
        ttl: float | None = None
        for name, values in query.items():
            if name == "_ttl":
                try:
                    ttl = _go_duration_seconds(values[0])
                except ValueError as error:
                    raise BadRequest("InvalidTag", f"{name}: {error}") from error
                continue
            if name in RESERVED_TAGS:
                raise BadRequest("InvalidTag", f"tag name '{name}' is reserved")
            if not TAG_NAME.match(name):
                raise BadRequest("InvalidTag", f"tag name '{name}' is invalid")
            if any(len(v) > 128 for v in values):
                raise BadRequest(
                    "InvalidTag", f"the value for tag '{name}' is longer than 128 UTF-8 characters"
                )
            if name in SYSTEM_TAGS and len(values) != 1:
                raise BadRequest("InvalidTag", f"only one value for tag '{name}' can be given")
        now = time.time()
        tags = {k: v for k, v in query.items() if k != "_ttl"}
        return Blob(
            id=str(uuid.uuid4()),
            subject=subject[0],
            tags=tags,
            content_type=self.headers.get("Content-Type") or None,
            data=data,
            created=now,
            expires=None if ttl is None else now + ttl,
        )


class StorageStandIn(ThreadingHTTPServer):
    """The stand-in on a loopback port; ``url`` is what Gadgetron's ``-E`` takes.

    Use as a context manager: it serves in a daemon thread until the block ends.
    """

    daemon_threads = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__((host, port), _Handler)
        self.store = BlobStore()
        self.requests: list[str] = []
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> StorageStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)
