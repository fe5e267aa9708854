"""util.fs.atomic_write from several threads of one process at once: each write is whole, none fails."""

from __future__ import annotations

import threading

from library_syncer.util.fs import atomic_write


def test_threads_writing_one_file_at_once_never_fail(tmp_path):
    path = tmp_path / "sync_key"
    errors: list[BaseException] = []
    payloads = [bytes([n]) * 4096 for n in range(2)]

    def writer(data: bytes) -> None:
        try:
            for _ in range(200):
                atomic_write(path, data, 0o600)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[0]
    assert path.read_bytes() in payloads
    assert not [p for p in tmp_path.iterdir() if p.name != "sync_key"]  # no temporary file left
