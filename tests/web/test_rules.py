"""Pure rules of the web server: path splitting, content types, Range, auth, listing, URLs."""

from __future__ import annotations

import base64

import pytest

from library_syncer.web.rules import (
    Entry,
    check_basic_auth,
    content_type_for,
    front_etag,
    front_precondition,
    front_range,
    planned_bytes,
    range_plan,
    render_listing,
    split_request_path,
    subscription_urls,
)


@pytest.mark.parametrize("raw, parts", [
    ("/", ()),
    ("/lib.json", ("lib.json",)),
    ("/item%20one/disk-1.vmdk", ("item one", "disk-1.vmdk")),
    ("/caf%C3%A9/", ("café",)),
    ("/a%25b", ("a%b",)),
])
def test_split_accepts(raw, parts):
    assert split_request_path(raw) == parts


@pytest.mark.parametrize("raw", [
    "/../etc/passwd", "/a/../../x", "/%2e%2e/x", "/%2E%2E/x", "/.%2e/x", "/a/%2e%2e%2fx",
    "/a%2fb", "/a%2F..%2Fb", "/a%5cb", "/a%00b", "/./lib.json", "/a//b", "/.library-syncer/state.json",
    "/item/.hidden", "/.git/", "/%2elibrary-syncer/x", "/%ff", "lib.json", "",
])
def test_split_refuses(raw):
    assert split_request_path(raw) is None


@pytest.mark.parametrize("name, ctype", [
    ("lib.json", "application/json"), ("ITEM.JSON", "application/json"),
    ("disk-1.vmdk", "application/octet-stream"), ("t.ovf", "application/octet-stream"),
    ("t.mf", "application/octet-stream"), ("x.iso", "application/octet-stream"),
    ("notes.txt", "text/plain"), ("backup.tar.gz", "application/octet-stream"),
    ("noextension", "application/octet-stream"),
])
def test_content_types(name, ctype):
    assert content_type_for(name) == ctype


LM = 1445412480  # Wed, 21 Oct 2015 07:28:00 GMT


def test_range_rules():
    assert range_plan(None, None, "e", LM) == "whole"
    assert range_plan("bytes=0-9", None, "e", LM) == "range"
    assert range_plan("bytes=10-", None, "e", LM) == "range"
    assert range_plan("bytes=-16", None, "e", LM) == "range"
    assert range_plan("bytes=0-1,4-5", None, "e", LM) == "whole"  # whole file instead of multipart
    assert range_plan("bytes=9-0", None, "e", LM) == "whole"  # invalid: ignored
    assert range_plan("items=0-9", None, "e", LM) == "whole"  # unknown unit: ignored
    assert range_plan("bytes=-", None, "e", LM) == "whole"
    assert range_plan("bytes=-0", None, "e", LM) == "unsatisfiable"
    assert range_plan("bytes=-000", None, "e", LM) == "unsatisfiable"


@pytest.mark.parametrize("if_range, plan", [
    ('"e"', "range"),
    ('"other"', "whole"),
    ('W/"e"', "whole"),  # If-Range needs a strong match
    ("Wed, 21 Oct 2015 07:28:00 GMT", "range"),  # exactly the Last-Modified
    ("Wednesday, 21-Oct-15 07:28:00 GMT", "range"),  # obsolete RFC 850 form
    ("Wed Oct 21 07:28:00 2015", "range"),  # asctime form
    ("Wed, 21 Oct 2015 07:28:01 GMT", "whole"),  # later than Last-Modified: another version
    ("Wed, 21 Oct 2015 07:27:59 GMT", "whole"),
    ("garbage", "whole"),  # neither an ETag nor a date
    ("", "whole"),
    ("e", "whole"),  # an unquoted ETag is no validator
])
def test_if_range(if_range, plan):
    assert range_plan("bytes=0-9", if_range, "e", LM) == plan
    assert range_plan(None, if_range, "e", LM) == "whole"
    if plan == "range":  # a valid If-Range does not make bytes=-0 satisfiable
        assert range_plan("bytes=-0", if_range, "e", LM) == "unsatisfiable"


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic_auth():
    assert check_basic_auth(_basic("vcsp", "s3cret:é"), "s3cret:é")
    assert not check_basic_auth(_basic("vcsp", "wrong"), "s3cret")
    assert not check_basic_auth(_basic("admin", "s3cret"), "s3cret")
    assert not check_basic_auth(None, "s3cret")
    assert not check_basic_auth("Basic !!!notbase64", "s3cret")
    assert not check_basic_auth("Bearer abc", "s3cret")


def test_listing_escapes_names_and_encodes_links():
    page = render_listing(("a <b>",), [
        Entry('x"<script>.vmdk', False, 12, 0), Entry("sub dir", True, 0, 0), Entry("100%.iso", False, 1, 0),
    ])
    assert "<script>" not in page
    assert 'href="x%22%3Cscript%3E.vmdk"' in page
    assert 'href="sub%20dir/"' in page and 'href="100%25.iso"' in page
    assert "Index of /a &lt;b&gt;/" in page
    assert page.index("sub dir/") < page.index("100%.iso")  # folders first
    assert 'href="../"' in page
    assert 'href="../"' not in render_listing((), [])


def test_subscription_urls():
    assert subscription_urls("127.0.0.1", 8080, tls=False, hostname="h") == ["http://127.0.0.1:8080/lib.json"]
    assert subscription_urls("0.0.0.0", 443, tls=True, hostname="site1") == ["https://site1:443/lib.json"]
    assert subscription_urls("::", 80, tls=False, hostname="site1") == ["http://site1:80/lib.json"]
    assert subscription_urls("::1", 80, tls=False, hostname="h") == ["http://[::1]:80/lib.json"]


def test_planned_bytes_of_the_range_the_front_sends():
    assert planned_bytes(None, 100) == 100
    assert planned_bytes("bytes=10-19", 100) == 10
    assert planned_bytes("bytes=90-", 100) == 10 and planned_bytes("bytes=90-500", 100) == 10
    assert planned_bytes("bytes=-5", 100) == 5 and planned_bytes("bytes=-500", 100) == 100
    assert planned_bytes("bytes=100-", 100) == 0  # past the end: 416


def test_front_etag_is_caddys_base36_of_mtime_seconds_and_size():
    assert front_etag(1796164550, 3000000) == "tpe1fq1satc"  # as Caddy 2.6 sent it for that file
    assert front_etag(35, 0) == "z0"


def test_front_range_is_spelt_for_gos_parser():
    assert front_range(" Bytes=10-19 ") == "bytes=10-19"
    assert front_range("BYTES=-5") == "bytes=-5" and front_range("bytes=7-") == "bytes=7-"


@pytest.mark.parametrize("headers, status", [
    ({}, None),
    ({"If-None-Match": '"e1"'}, 304), ({"If-None-Match": 'W/"e1"'}, 304), ({"If-None-Match": '"x", "e1"'}, 304),
    ({"If-None-Match": "*"}, 304), ({"If-None-Match": '"x"'}, None),
    ({"If-None-Match": '"x"', "If-Modified-Since": "Sat, 01 Jan 2000 00:00:10 GMT"}, None),  # INM decides
    ({"If-Modified-Since": "Sat, 01 Jan 2000 00:00:10 GMT"}, 304), ({"If-Modified-Since": "Sat, 01 Jan 2000 00:00:09 GMT"}, None),
    ({"If-Modified-Since": "not a date"}, None),
    ({"If-Match": '"e1"'}, None), ({"If-Match": 'W/"e1"'}, 412), ({"If-Match": '"x"'}, 412), ({"If-Match": "*"}, None),
    ({"If-Unmodified-Since": "Sat, 01 Jan 2000 00:00:09 GMT"}, 412),
    ({"If-Unmodified-Since": "Sat, 01 Jan 2000 00:00:10 GMT"}, None),
    ({"If-Match": '"e1"', "If-Unmodified-Since": "Sat, 01 Jan 2000 00:00:09 GMT"}, None),  # If-Match decides
])
def test_front_precondition_as_gos_file_server(headers, status):
    assert front_precondition(headers, "e1", 946684810) == status  # 2000-01-01 00:00:10 UTC
