"""Classification of rsync/ssh exit codes (pure)."""

from __future__ import annotations

import pytest

from library_syncer.transport.exitcodes import MEANINGS, classify

HOST_KEY_CHANGED = """@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
Host key for [127.0.0.1]:2222 has changed and you have requested strict checking.
Host key verification failed.
rsync: connection unexpectedly closed (0 bytes received so far) [Receiver]
rsync error: unexplained error (code 255) at io.c(232) [Receiver=3.5.0]
"""


@pytest.mark.parametrize("code", [10, 12, 23, 24, 30, 35])
def test_retryable_codes(code):
    outcome = classify(code, "rsync error: something (code %d)" % code)
    assert outcome.retryable, outcome
    assert MEANINGS[code] in outcome.message


@pytest.mark.parametrize("code", [1, 2, 3, 4, 5, 6, 13, 14, 21, 22, 25])
def test_fatal_codes(code):
    assert not classify(code, "").retryable


def test_disk_full_is_fatal_and_says_so():
    outcome = classify(11, 'rsync: [receiver] write failed on "/L/x.vmdk": No space left on device (28)\n'
                           "rsync error: error in file I/O (code 11) at receiver.c(381) [receiver=3.5.0]\n")
    assert not outcome.retryable and outcome.kind == "disk-full" and "disk" in outcome.message and "full" in outcome.message
    assert "full" in classify(11, "").message
    assert classify(23, "write failed: No space left on device (28)").kind == "disk-full"


@pytest.mark.parametrize("stderr", [
    "ssh: connect to host 127.0.0.1 port 2222: Connection refused\nrsync: connection unexpectedly closed",
    "ssh: connect to host 10.1.1.1 port 2222: Connection timed out",
    "Timeout, server 10.1.1.1 not responding.",
    "client_loop: send disconnect: Broken pipe",
    "ssh: Could not resolve hostname primary.example: Temporary failure in name resolution",
    "",
])
def test_ssh_255_network_is_retryable(stderr):
    assert classify(255, stderr).retryable


def test_ssh_255_host_key_and_auth_are_fatal():
    changed = classify(255, HOST_KEY_CHANGED)
    assert not changed.retryable and changed.kind == "host-key" and "CHANGED" in changed.message
    assert classify(255, "Host key verification failed.\r\n").kind == "host-key"
    auth = classify(255, "syncer@127.0.0.1: Permission denied (publickey).\r\n")
    assert not auth.retryable and auth.kind == "auth"
    key = classify(255, "Load key \"/k\": bad permissions\nsyncer@h: Permission denied (publickey).")
    assert not key.retryable and key.kind == "key"


def test_permission_denied_on_a_file_is_not_auth():
    outcome = classify(23, 'rsync: [sender] send_files failed to open "/x": Permission denied (13)')
    assert outcome.retryable and outcome.kind == "partial"


def test_rrsync_refusal_is_fatal():
    outcome = classify(12, "/usr/bin/rrsync error: option -s has been disabled on this server\n"
                           "rsync: connection unexpectedly closed (0 bytes received so far) [Receiver]")
    assert not outcome.retryable and outcome.kind == "refused"


def test_killed_by_signal_is_retryable():
    assert classify(-9, "").retryable and classify(0).ok


def test_message_names_the_cause_not_the_summary():
    outcome = classify(255, "ssh: connect to host 127.0.0.1 port 2222: Connection refused\r\n"
                            "rsync: connection unexpectedly closed (0 bytes received so far) [Receiver]\n"
                            "rsync error: unexplained error (code 255) at io.c(232) [Receiver=3.5.0]\n")
    assert outcome.message.endswith("port 2222: Connection refused")
