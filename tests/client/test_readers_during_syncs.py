"""A reader polling the served library during many syncs only ever sees complete generations."""

from __future__ import annotations

import subprocess
import threading
import urllib.parse

import requests

from library_syncer.config import load_settings
from library_syncer.sync.run import run_sync
from support import cli_popen, free_port, wait_port


def test_reader_sees_only_complete_generations(tmp_path):
    src, library = tmp_path / "src", tmp_path / "L"
    settings = load_settings(library=library, state_dir=tmp_path / "state", library_name="Branch",
                             sync_allow_mass_delete=True)
    (src / "base").mkdir(parents=True)
    (src / "base" / "disk.vmdk").write_bytes(b"b" * 300_000)
    assert run_sync(settings, source=str(src)).ok

    port = free_port()
    server = cli_popen("serve", library, "--host", "127.0.0.1", "--port", str(port),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stop, problems, checks = threading.Event(), [], [0]

    def reader() -> None:
        s = requests.Session()
        base = f"http://127.0.0.1:{port}/"
        while not stop.is_set():
            try:
                lib = s.get(base + "lib.json", timeout=5).json()
                items = s.get(base + lib["itemsHref"], timeout=5).json()["items"]
                for item in items:
                    for f in item["files"]:
                        r = s.get(base + f["hrefs"][0], timeout=10)
                        if r.status_code != 200 or len(r.content) != f["size"]:
                            problems.append(f"{urllib.parse.unquote(f['hrefs'][0])}: {r.status_code}, "
                                            f"{len(r.content)} bytes, manifest says {f['size']}")
                checks[0] += 1
            except (requests.RequestException, ValueError, KeyError) as exc:
                problems.append(f"reader: {exc!r}")

    try:
        wait_port("127.0.0.1", port)
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        for i in range(8):  # bounded: eight syncs that add, grow, shrink and delete items
            (src / f"item{i}").mkdir()
            (src / f"item{i}" / "data.iso").write_bytes(bytes([i]) * (100_000 + 50_000 * i))
            (src / "base" / "disk.vmdk").write_bytes(bytes([65 + i]) * (300_000 - 20_000 * i))
            if i >= 2:
                for p in (src / f"item{i - 2}").iterdir():
                    p.unlink()
                (src / f"item{i - 2}").rmdir()
            result = run_sync(settings, source=str(src))
            assert result.ok, result.reason
            assert result.generation is not None
        stop.set()
        t.join(timeout=30)
    finally:
        stop.set()
        server.terminate()
        server.wait(timeout=30)
    assert not problems, problems[:5]
    assert checks[0] > 0
