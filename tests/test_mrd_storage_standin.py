"""The MRD storage stand-in answers as the real mrd-storage-server does (api/*.go there).

Requests are made as Gadgetron's StorageClient (core/Storage.cpp) makes them: the tags as a
query string, a chunked POST body, ``/v1/blobs/data/latest`` for reads.
"""

from __future__ import annotations

import http.client
import json

import pytest
from mrd_storage_standin import StorageStandIn

TAGS = "subject=P1&device=DEV&session=S1&name=noise_covariance&measurement=DEV_P1_S1_7"


@pytest.fixture
def storage():
    with StorageStandIn() as running:
        yield running


def request(storage, method, path, body=None, chunked=False):
    host, port = storage.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        headers = {"Transfer-Encoding": "chunked"} if chunked else {}
        if chunked:
            connection.putrequest(method, path)
            for key, value in headers.items():
                connection.putheader(key, value)
            connection.endheaders()
            for start in range(0, len(body), 5):
                piece = body[start : start + 5]
                connection.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            connection.send(b"0\r\n\r\n")
        else:
            connection.request(method, path, body=body)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_healthcheck_answers_200(storage):
    status, _, body = request(storage, "GET", "/healthcheck")
    assert status == 200 and json.loads(body)


def test_a_stored_blob_comes_back_as_the_latest_with_its_tags(storage):
    status, headers, body = request(
        storage, "POST", f"/v1/blobs/data?{TAGS}&_ttl=172800s", b"covariance bytes", chunked=True
    )
    assert status == 201 and headers["Content-Type"] == "application/json; charset=utf-8"
    info = json.loads(body)
    assert info["subject"] == "P1" and info["name"] == "noise_covariance"
    assert info["measurement"] == "DEV_P1_S1_7" and "expires" in info
    assert info["data"].endswith(info["location"].rsplit("/", 1)[1] + "/data")
    request(storage, "POST", f"/v1/blobs/data?{TAGS}", b"newer", chunked=True)

    status, headers, body = request(storage, "GET", f"/v1/blobs/data/latest?{TAGS}")
    assert status == 200 and body == b"newer"
    assert headers["Mrd-Tag-Subject"] == "P1" and headers["Mrd-Tag-Measurement"] == "DEV_P1_S1_7"
    assert headers["Content-Type"] == "application/octet-stream"
    status, _, body = request(storage, "GET", "/v1/blobs?subject=P1&_limit=1")
    assert status == 200 and len(json.loads(body)["items"]) == 1
    # ``data`` is an absolute URL; its path reads the first blob back
    status, _, body = request(storage, "GET", "/" + info["data"].split("/", 3)[3])
    assert status == 200 and body == b"covariance bytes"


def test_a_query_matching_nothing_is_404_empty_results(storage):
    status, _, body = request(storage, "GET", "/v1/blobs/data/latest?subject=nobody&name=x")
    assert status == 404 and json.loads(body)["error"]["code"] == "EmptyResults"


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("name=x", "InvalidTag"),  # no subject
        ("subject=", "InvalidSubject"),
        ("subject=a&location=x", "InvalidTag"),  # reserved
        ("subject=a&_ttl=soon", "InvalidTag"),
        ("subject=a&" + "t=" + "v" * 129, "InvalidTag"),
    ],
)
def test_bad_tags_are_400_with_the_servers_error_code(storage, query, code):
    status, _, body = request(storage, "POST", f"/v1/blobs/data?{query}", b"x", chunked=True)
    assert status == 400 and json.loads(body)["error"]["code"] == code
