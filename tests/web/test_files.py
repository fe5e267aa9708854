"""The library web app served on loopback, checked with real HTTP clients."""

from __future__ import annotations

import http.client
import os
from pathlib import Path

import pytest
import requests
from aiohttp import web

from library_syncer.web.app import RESERVED_PREFIX, create_app

from .helpers import ServerThread, raw_request, sparse_file

GiB = 1024**3


@pytest.fixture
def library(tmp_path: Path) -> Path:
    lib = tmp_path / "lib"
    (lib / "item one").mkdir(parents=True)
    (lib / "lib.json").write_text('{"vcspVersion": "2"}')
    (lib / "item one" / "item.json").write_text('{"name": "item one"}')
    (lib / "item one" / "disk-1.vmdk").write_bytes(bytes(range(256)) * 40)
    (lib / "item one" / "t.ovf").write_text("<Envelope/>")
    (lib / ".library-syncer").mkdir()
    (lib / ".library-syncer" / "state.json").write_text("{}")
    (lib / "item one" / ".partial").write_text("half")
    (tmp_path / "outside.txt").write_text("outside")
    return lib


@pytest.fixture
def server(library: Path):
    with ServerThread(create_app(library)) as srv:
        yield srv


def test_get_head_and_types(server, library):
    r = requests.get(server.base + "/lib.json")
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    assert r.json() == {"vcspVersion": "2"}
    r = requests.get(server.base + "/item%20one/disk-1.vmdk")
    assert r.status_code == 200 and r.content == (library / "item one" / "disk-1.vmdk").read_bytes()
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert r.headers["Accept-Ranges"] == "bytes" and r.headers["ETag"] and r.headers["Last-Modified"]
    assert requests.get(server.base + "/item%20one/t.ovf").headers["Content-Type"] == "application/octet-stream"
    h = requests.head(server.base + "/item%20one/disk-1.vmdk")
    assert h.status_code == 200 and h.content == b"" and h.headers["Content-Length"] == "10240"
    assert h.headers["ETag"] == r.headers["ETag"]
    assert requests.post(server.base + "/lib.json").status_code == 405


def test_ranges(server, library):
    data = (library / "item one" / "disk-1.vmdk").read_bytes()
    url = server.base + "/item%20one/disk-1.vmdk"
    r = requests.get(url, headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == data[100:200]
    assert r.headers["Content-Range"] == "bytes 100-199/10240"
    r = requests.get(url, headers={"Range": "bytes=10000-"})
    assert r.status_code == 206 and r.content == data[10000:]
    r = requests.get(url, headers={"Range": "bytes=-16"})
    assert r.status_code == 206 and r.content == data[-16:]
    r = requests.head(url, headers={"Range": "bytes=0-9"})
    assert r.status_code == 206 and r.headers["Content-Length"] == "10"
    r = requests.get(url, headers={"Range": "bytes=20000-"})
    assert r.status_code == 416 and r.headers["Content-Range"] == "bytes */10240"
    r = requests.get(url, headers={"Range": "bytes=0-1,5-6"})  # multiple ranges: the whole file
    assert r.status_code == 200 and r.content == data
    for method in (requests.get, requests.head):  # a suffix of zero bytes is unsatisfiable (RFC 9110)
        r = method(url, headers={"Range": "bytes=-0"})
        assert r.status_code == 416 and r.headers["Content-Range"] == "bytes */10240" and r.content == b""
    r = requests.get(url, headers={"Range": "bytes=-0", "If-None-Match": requests.head(url).headers["ETag"]})
    assert r.status_code == 304  # preconditions first
    r = requests.get(url, headers={"Range": "bytes=9-2"})  # invalid: ignored
    assert r.status_code == 200 and r.content == data


def test_conditional_requests(server, library):
    url = server.base + "/item%20one/disk-1.vmdk"
    first = requests.get(url)
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    assert requests.get(url, headers={"If-None-Match": etag}).status_code == 304
    assert requests.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
    assert requests.get(url, headers={"If-Modified-Since": modified}).status_code == 304
    assert requests.get(url, headers={"If-Modified-Since": "Thu, 01 Jan 1998 00:00:00 GMT"}).status_code == 200
    assert requests.get(url, headers={"If-Match": '"other"'}).status_code == 412
    ok = requests.get(url, headers={"Range": "bytes=0-9", "If-Range": etag})
    assert ok.status_code == 206 and len(ok.content) == 10
    stale = requests.get(url, headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert stale.status_code == 200 and len(stale.content) == 10240
    old_date = requests.get(url, headers={"Range": "bytes=0-9", "If-Range": "Thu, 01 Jan 1998 00:00:00 GMT"})
    assert old_date.status_code == 200 and len(old_date.content) == 10240
    same_date = requests.get(url, headers={"Range": "bytes=0-9", "If-Range": modified})
    assert same_date.status_code == 206 and len(same_date.content) == 10
    for invalid in ("not a validator", "W/" + etag, etag.strip('"'), "Fri, 01 Jan 2100 00:00:00 GMT"):
        whole = requests.get(url, headers={"Range": "bytes=0-9", "If-Range": invalid})
        assert (whole.status_code, len(whole.content)) == (200, 10240), invalid
    # A new version of the file gets a new ETag.
    path = library / "item one" / "disk-1.vmdk"
    path.write_bytes(b"new bytes")
    os.utime(path, ns=(1, 2_000_000_000_000_000_000))
    again = requests.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 200 and again.content == b"new bytes" and again.headers["ETag"] != etag


def test_if_range_date_of_a_newer_version_after_a_rollback(server, library):
    # rsync keeps the primary's mtimes: a rolled-back file can be older than the one a client
    # started to download. Its If-Range date no longer matches: the whole new file, not a splice.
    path = library / "item one" / "disk-1.vmdk"
    os.utime(path, (1_700_000_000, 1_700_000_000))
    url = server.base + "/item%20one/disk-1.vmdk"
    modified = requests.head(url).headers["Last-Modified"]
    path.write_bytes(b"R" * 10240)  # same size, older time
    os.utime(path, (1_600_000_000, 1_600_000_000))
    r = requests.get(url, headers={"Range": "bytes=100-", "If-Range": modified})
    assert r.status_code == 200 and r.content == b"R" * 10240


def test_no_precompressed_sibling(server, library):
    (library / "item one" / "disk-1.vmdk.gz").write_bytes(b"not the disk")
    r = requests.get(server.base + "/item%20one/disk-1.vmdk", headers={"Accept-Encoding": "gzip, br"})
    assert r.status_code == 200 and "Content-Encoding" not in r.headers and len(r.content) == 10240


def test_sparse_file_beyond_4gib(tmp_path):
    lib = tmp_path / "big"
    size = 5 * GiB + 12345
    sparse_file(lib / "item" / "huge.vmdk", size,
                {0: b"HEAD", 4 * GiB + 7: b"PAST4GIB", size - 8: b"LASTBYTE"})
    with ServerThread(create_app(lib)) as srv:
        url = srv.base + "/item/huge.vmdk"
        h = requests.head(url)
        assert h.status_code == 200 and int(h.headers["Content-Length"]) == size
        r = requests.get(url, headers={"Range": f"bytes={size - 8}-"})
        assert r.status_code == 206 and r.content == b"LASTBYTE"
        assert r.headers["Content-Range"] == f"bytes {size - 8}-{size - 1}/{size}"
        r = requests.get(url, headers={"Range": f"bytes={4 * GiB + 5}-{4 * GiB + 16}"})
        assert r.content == b"\0\0PAST4GIB\0\0"
        r = requests.get(url, headers={"Range": "bytes=-4"})
        assert r.content == b"BYTE"


@pytest.mark.parametrize("path", [
    "/../outside.txt", "/%2e%2e/outside.txt", "/%2E%2E/outside.txt", "/item%20one/..%2f..%2foutside.txt",
    "/item%20one%2f..%2f..%2foutside.txt", "/item%20one/%2e%2e/%2e%2e/outside.txt", "/..%5coutside.txt",
    "/.library-syncer/state.json", "/%2elibrary-syncer/state.json", "/item%20one/.partial",
    "/_syncer/anything", "/%5fsyncer/anything", "/nope.json", "/lib.json%00.txt",
    "/item%20one/", "/item%20one", "/",
])
def test_refused_paths_are_404(server, path):
    status, _, body = raw_request(server.port, path)
    assert status == 404, path
    assert b"outside" not in body and b"{}" not in body


def test_absolute_form_request_target(server):
    status, _, _ = raw_request(server.port, f"http://127.0.0.1:{server.port}/../outside.txt")
    assert status in (400, 404)
    status, _, body = raw_request(server.port, f"http://127.0.0.1:{server.port}/lib.json")
    assert status == 200 and b"vcspVersion" in body


def test_symlinks(server, library, tmp_path):
    (library / "escape.txt").symlink_to(tmp_path / "outside.txt")
    (library / "escape-dir").symlink_to(tmp_path)
    (library / "into-state").symlink_to(library / ".library-syncer")
    (library / "alias.json").symlink_to(library / "lib.json")
    (library / "loop").symlink_to(library / "loop")
    for path in ("/escape.txt", "/escape-dir/outside.txt", "/into-state/state.json", "/loop"):
        assert raw_request(server.port, path)[0] == 404, path
    assert raw_request(server.port, "/alias.json")[0] == 200  # a symlink inside the library is fine


def test_browse(library, tmp_path):
    (library / "escape.txt").symlink_to(tmp_path / "outside.txt")
    (library / 'odd <&"> name.iso').write_bytes(b"x")
    with ServerThread(create_app(library, browse=True)) as srv:
        r = requests.get(srv.base + "/")
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
        assert 'href="item%20one/"' in r.text and 'href="lib.json"' in r.text
        assert "odd &lt;&amp;&quot;&gt; name.iso" in r.text and 'href="odd%20%3C%26%22%3E%20name.iso"' in r.text
        assert ".library-syncer" not in r.text and ".partial" not in r.text and "escape.txt" not in r.text
        sub = requests.get(srv.base + "/item%20one", allow_redirects=False)
        assert sub.status_code == 301 and sub.headers["Location"] == "/item%20one/"
        sub = requests.get(srv.base + "/item%20one/")
        assert 'href="disk-1.vmdk"' in sub.text and ".partial" not in sub.text and 'href="../"' in sub.text
        assert raw_request(srv.port, "/.library-syncer/")[0] == 404
        assert requests.head(srv.base + "/").status_code == 200


def test_password(library):
    app = create_app(library, password="pa:ss wörd")
    app.router.add_get(RESERVED_PREFIX + "healthz", _healthz)
    with ServerThread(app) as srv:
        url = srv.base + "/lib.json"
        r = requests.get(url)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith('Basic realm="')
        assert requests.get(url, auth=("vcsp", "wrong")).status_code == 401
        assert requests.get(url, auth=("admin", "pa:ss wörd")).status_code == 401
        assert requests.get(url, auth=("vcsp", "pa:ss wörd".encode())).json() == {"vcspVersion": "2"}
        assert requests.get(srv.base + "/nope", auth=("vcsp", "wrong")).status_code == 401  # no probing
        # the reserved prefix checks access itself (status endpoints): no library password there
        assert requests.get(srv.base + RESERVED_PREFIX + "healthz").text == "fine"


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="fine")


def test_routes_under_reserved_prefix(library):
    app = create_app(library)

    async def status(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app.router.add_get(RESERVED_PREFIX + "api/status", status)
    (library / "_syncer").mkdir()
    (library / "_syncer" / "api").mkdir()
    (library / "_syncer" / "api" / "other").write_text("library file")
    with ServerThread(app) as srv:
        assert requests.get(srv.base + "/_syncer/api/status").json() == {"ok": True}
        assert requests.get(srv.base + "/_syncer/api/other").status_code == 404  # never a library file
        assert requests.get(srv.base + "/lib.json").status_code == 200


def test_root_switch_during_download(tmp_path):
    """A download keeps its generation; requests after the switch see the new one."""
    lib = tmp_path / "lib"
    size = 64 * 1024 * 1024
    for gen, mark in (("000001", b"A"), ("000002", b"B")):
        sparse_file(lib / ".library-syncer" / "generations" / gen / "item" / "disk.vmdk", size,
                    {0: mark * 16, size - 16: mark * 16})
    current = lib / "current"
    current.symlink_to(".library-syncer/generations/000001")
    with ServerThread(create_app(lambda client, parts: current.resolve())) as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        conn.request("GET", "/item/disk.vmdk")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read(16) == b"A" * 16
        # Atomic switch (new symlink renamed over the old), then the old file is even removed.
        tmp_link = lib / "current.tmp"
        tmp_link.symlink_to(".library-syncer/generations/000002")
        tmp_link.rename(current)
        (lib / ".library-syncer" / "generations" / "000001" / "item" / "disk.vmdk").unlink()
        after = requests.get(srv.base + "/item/disk.vmdk", headers={"Range": "bytes=0-15"})
        assert after.content == b"B" * 16
        rest = resp.read()
        conn.close()
        assert len(rest) == size - 16 and rest[-16:] == b"A" * 16


def test_files_over_tls_are_exact_whole_and_ranged(tmp_path):
    """Over TLS files go out in big reads instead of asyncio's emulated sendfile: same bytes, same ranges."""
    from library_syncer.web.tls import load_tls_context

    from .helpers import make_cert

    lib = tmp_path / "lib"
    (lib / "item").mkdir(parents=True)
    data = os.urandom(5 * 1024 * 1024 + 12345)  # not a multiple of the chunk size
    (lib / "item" / "disk.vmdk").write_bytes(data)
    cert, key = make_cert(tmp_path / "tls")
    with ServerThread(create_app(lib), ssl_context=load_tls_context(cert, key)) as srv:
        url = f"https://127.0.0.1:{srv.port}/item/disk.vmdk"
        whole = requests.get(url, verify=str(cert), timeout=30)
        assert whole.status_code == 200 and whole.content == data
        part = requests.get(url, verify=str(cert), headers={"Range": "bytes=1048570-3145727"}, timeout=30)
        assert part.status_code == 206 and part.content == data[1048570:3145728]
        tail = requests.get(url, verify=str(cert), headers={"Range": "bytes=-100"}, timeout=30)
        assert tail.content == data[-100:]
