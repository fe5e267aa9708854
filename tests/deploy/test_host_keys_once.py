"""The server's host keys are made once even when two start at the same moment (the unit's first
start and the `server --print-host-key` of the install steps): both get the same key."""

from __future__ import annotations

import subprocess
import sys

from support import require_tool

ROUNDS = 3


def test_two_at_once_make_one_host_key(tmp_path):
    require_tool("ssh-keygen", "openssh-client")
    for n in range(ROUNDS):
        state = tmp_path / f"state{n}"
        state.mkdir(mode=0o755)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SYNCER_STATE_DIR": str(state)}
        procs = [subprocess.Popen([sys.executable, "-m", "library_syncer", "server", "--print-host-key"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        assert outs[0][0] == outs[1][0] and outs[0][0].startswith("ssh-ed25519 "), outs
