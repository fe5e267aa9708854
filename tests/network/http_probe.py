"""Poll a site's web server from inside its namespace, as a subscriber would.

Usage: ``python http_probe.py BASE_URL MAX_SECONDS PATH...``.  Every 0.2 s it
GETs each PATH and prints one JSON line: ``{"t": wall clock, "got": [[status,
sha256 of the body or the error], ...]}``.  Ends after MAX_SECONDS or on SIGTERM.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import urllib.error
import urllib.request


def fetch(url: str) -> list:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return [r.status, hashlib.sha256(r.read()).hexdigest()]
    except urllib.error.HTTPError as exc:
        return [exc.code, ""]
    except OSError as exc:
        return [0, str(exc)]


def main() -> None:
    base, max_seconds, paths = sys.argv[1].rstrip("/"), float(sys.argv[2]), sys.argv[3:]
    end = time.monotonic() + max_seconds
    while time.monotonic() < end:
        t = time.time()
        print(json.dumps({"t": t, "got": [fetch(f"{base}/{p}") for p in paths]}), flush=True)
        time.sleep(0.2)


if __name__ == "__main__":
    main()
