"""The plain-HTTP redirect beside HTTPS with given certificate files (web/redirect.py)."""

from __future__ import annotations

import pytest

from library_syncer.web.redirect import https_location


@pytest.mark.parametrize("host,path,name,port,expected", [
    ("lib.example.com", "/lib.json", "lib.example.com", 443, "https://lib.example.com/lib.json"),
    ("10.0.0.5:80", "/a%20b/item.json?x=1", "lib.example.com", 443, "https://lib.example.com/a%20b/item.json?x=1"),
    ("10.0.0.5:80", "/lib.json", None, 443, "https://10.0.0.5/lib.json"),
    ("[2001:db8::1]:80", "/lib.json", None, 8443, "https://[2001:db8::1]:8443/lib.json"),
    (None, "/", None, 443, "https://localhost/"),
])
def test_https_location(host, path, name, port, expected):
    assert https_location(host, path, name=name, https_port=port) == expected
