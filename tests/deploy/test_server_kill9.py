"""A server killed with SIGKILL leaves no sshd behind: its supervisor (systemd, a container
engine, anything) restarts it and finds the ssh port free."""

from __future__ import annotations

import os
import signal

from server_fixture import running_server
from support import port_refused, wait_until


def test_sshd_dies_with_a_killed_server(tmp_path):
    library = tmp_path / "library"
    (library / "item").mkdir(parents=True)
    (library / "item/a.iso").write_bytes(b"x")
    with running_server(tmp_path, library) as server:
        assert not port_refused(server.port)
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait(10)
        wait_until(lambda: port_refused(server.port), 10, "sshd to exit with the killed server")
