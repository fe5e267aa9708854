"""Read a published library the way a subscriber does: lib.json, items.json, every item.json and
every file, each saved under OUT by its href; prints the hrefs read as JSON.

Run inside the test's network namespace:
``python fetch_library.py ADDRESS:PORT OUT [--tls NAME CAFILE]`` (the certificate is checked for NAME).
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import sys
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit


def connection(address: str, tls: tuple[str, str] | None) -> http.client.HTTPConnection:
    host, _, port = address.rpartition(":")
    if tls is None:
        return http.client.HTTPConnection(host, int(port), timeout=30)
    name, cafile = tls
    ctx = ssl.create_default_context(cafile=cafile)

    class Conn(http.client.HTTPSConnection):
        def connect(self) -> None:  # to ADDRESS, checking the certificate for NAME
            self.sock = ctx.wrap_socket(socket.create_connection((host, int(port)), 30), server_hostname=name)

    return Conn(name, int(port), context=ctx, timeout=30)


def get(address: str, tls, path: str) -> bytes:
    conn = connection(address, tls)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        raise SystemExit(f"GET {path}: HTTP {resp.status}")
    return body


def main(argv: list[str]) -> int:
    address, out = argv[1], Path(argv[2])
    tls = (argv[4], argv[5]) if len(argv) == 6 and argv[3] == "--tls" else None
    read: list[str] = []

    def fetch(href: str) -> bytes:
        body = get(address, tls, urlsplit(href).path)
        target = out / unquote(urlsplit(href).path).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
        read.append(href)
        return body

    lib = json.loads(fetch("/lib.json"))
    items = json.loads(fetch(urljoin("/lib.json", lib["itemsHref"])))
    for item in items["items"]:
        fetch(urljoin("/", item["selfHref"]))
        for f in item["files"]:
            fetch(urljoin("/", f["hrefs"][0]))
    print(json.dumps(read))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
