"""Classification of rsync/ssh exit codes (pure): every documented code, signals, unknown codes."""

from __future__ import annotations

import pytest

from library_syncer.transport.exitcodes import FATAL_CODES, MEANINGS, classify

HOST_KEY_CHANGED = """@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
Host key for [127.0.0.1]:2222 has changed and you have requested strict checking.
Host key verification failed.
rsync: connection unexpectedly closed (0 bytes received so far) [Receiver]
rsync error: unexplained error (code 255) at io.c(232) [Receiver=3.5.0]
"""

RETRYABLE = [3, 5, 6, 10, 11, 12, 13, 14, 15, 16, 19, 20, 21, 22, 23, 24, 30, 35, 124, 125]
FATAL = [1, 2, 4, 25, 126, 127]


def test_every_documented_code_has_a_verdict():
    assert sorted(RETRYABLE + FATAL + [0, 255]) == sorted(MEANINGS)
    assert FATAL_CODES == set(FATAL)


@pytest.mark.parametrize("code", RETRYABLE)
def test_retryable_codes(code):
    outcome = classify(code, "rsync error: something (code %d)" % code)
    assert outcome.retryable, outcome
    assert MEANINGS[code] in outcome.message


@pytest.mark.parametrize("code", FATAL)
def test_fatal_codes(code):
    outcome = classify(code, "")
    assert not outcome.retryable and outcome.message, outcome


@pytest.mark.parametrize("code", [7, 17, 99, 100, 128, 200, 256, 1000])
def test_unknown_codes_are_retried_never_fatal(code):
    outcome = classify(code, "something nobody has seen before")
    assert outcome.retryable and outcome.kind in ("unknown", "interrupted"), outcome
    assert str(code) in outcome.message


@pytest.mark.parametrize("code, name", [(-9, "SIGKILL"), (-15, "SIGTERM"), (137, "SIGKILL"), (143, "SIGTERM"),
                                        (247, "SIGKILL"), (241, "SIGTERM"), (254, "SIGINT")])
def test_exits_caused_by_signals_are_retryable(code, name):
    outcome = classify(code, "")
    assert outcome.retryable and outcome.kind == "interrupted" and name in outcome.message, outcome


def test_ssh_killed_by_a_signal_is_retryable():
    outcome = classify(255, "Killed by signal 15.\r\nrsync: connection unexpectedly closed (42 bytes received so far)")
    assert outcome.retryable and outcome.kind == "interrupted" and "SIGTERM" in outcome.message


def test_sibling_killed_is_retryable():
    outcome = classify(16, "rsync error: sibling process terminated abnormally (code 16) at main.c(1956)")
    assert outcome.retryable and outcome.kind == "interrupted"


def test_success():
    assert classify(0).ok and not classify(0).retryable


def test_disk_full_is_fatal_and_says_so():
    outcome = classify(11, 'rsync: [receiver] write failed on "/L/x.vmdk": No space left on device (28)\n'
                           "rsync error: error in file I/O (code 11) at receiver.c(381) [receiver=3.5.0]\n")
    assert not outcome.retryable and outcome.kind == "disk-full" and "disk" in outcome.message and "full" in outcome.message
    assert "No space left on device" in outcome.message
    assert classify(23, "write failed: No space left on device (28)").kind == "disk-full"
    assert classify(12, "rsync: [receiver] write failed: Disk quota exceeded (122)").kind == "disk-full"


def test_file_io_error_11_read_only_and_eio_are_fatal_others_retry():
    ro = classify(11, 'rsync: [receiver] mkstemp "/L/.library-syncer/staging/a/.x.iso.Ab" failed: '
                      "Read-only file system (30)\nrsync error: error in file I/O (code 11)")
    assert not ro.retryable and ro.kind == "disk" and "read-only" in ro.message
    eio = classify(11, 'rsync: [receiver] write failed on "/L/x": Input/output error (5)')
    assert not eio.retryable and eio.kind == "disk" and "I/O errors" in eio.message
    # a read error at the primary (the sender) is the primary's problem: retried
    assert classify(23, 'rsync: [sender] read errors mapping "/lib/a.vmdk": Input/output error (5)').retryable
    other = classify(11, "rsync: [receiver] write failed: Broken pipe (32)")
    assert other.retryable and other.kind == "io"
    assert classify(11, "").retryable


def test_staging_not_writable_is_fatal():
    outcome = classify(23, 'rsync: [receiver] mkstemp "/L/.library-syncer/staging/a/.f.Xy" failed: '
                           "Permission denied (13)\nrsync error: some files/attrs were not transferred (code 23)")
    assert not outcome.retryable and "staging" in outcome.message
    generator = classify(23, 'rsync: [generator] recv_generator: mkdir "/L/s/b" failed: Permission denied (13)')
    assert not generator.retryable


def test_permission_denied_on_a_source_file_is_retried():
    outcome = classify(23, 'rsync: [sender] send_files failed to open "/x": Permission denied (13)')
    assert outcome.retryable and outcome.kind == "partial"


@pytest.mark.parametrize("code, stderr, program, what", [
    (127, "setpriv: failed to execute rsync: No such file or directory\n", "rsync", "was not found"),
    (126, "setpriv: failed to execute /opt/rsync: Permission denied\n", "/opt/rsync", "could not be run"),
    (127, "setpriv: failed to execute ssh: No such file or directory\nrsync: connection unexpectedly closed "
          "(0 bytes received so far) [Receiver]\nrsync error: remote command not found (code 127)", "ssh", "was not found"),
    (127, "bash: line 1: /usr/bin/rrsync: No such file or directory\n", "/usr/bin/rrsync", "was not found"),
    (127, "sh: 1: rrsync: not found\nrsync: connection unexpectedly closed (0 bytes received so far) [Receiver]\n"
          "rsync error: remote command not found (code 127) at io.c(285) [Receiver=3.5.0]", "rrsync", "was not found"),
    (127, "cannot run setpriv: command not found (install the Debian package util-linux)\n", "setpriv", "was not found"),
    (14, "rsync: [Receiver] Failed to exec ssh: No such file or directory (2)\n"
         "rsync error: error in IPC code (code 14) at pipe.c(85) [Receiver=3.5.0]", "ssh", "was not found"),
    (14, "rsync: [Receiver] Failed to exec /k/ssh: Permission denied (13)\n", "/k/ssh", "could not be run"),
    (12, "setpriv: failed to execute ssh: No such file or directory\nrsync: connection unexpectedly closed "
         "(0 bytes received so far) [Receiver]", "ssh", "was not found"),
])
def test_program_not_found_or_not_executable_is_fatal_and_named(code, stderr, program, what):
    outcome = classify(code, stderr)
    assert not outcome.retryable and outcome.kind == "program", outcome
    assert f"the program {program} {what}" in outcome.message and "\n" not in outcome.message


def test_126_127_without_stderr_are_still_fatal():
    for code in (126, 127):
        outcome = classify(code, "")
        assert not outcome.retryable and "rsync or ssh" in outcome.message


def test_ipc_error_without_exec_failure_is_retried():
    assert classify(14, "rsync: fork failed in do_recv: Resource temporarily unavailable (11)").retryable


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


@pytest.mark.parametrize("stderr, said", [
    ("ssh: connect to host 127.0.0.1 port 2222: Connection refused\nrsync: connection unexpectedly closed",
     "ssh could not reach the server"),
    ("rsync: [generator] write error: Broken pipe (32)", "the connection to the server broke"),
    ("Timeout, server 10.1.1.1 not responding.", "the connection to the server broke"),
    ("ssh: Could not resolve hostname primary.example: Temporary failure in name resolution",
     "ssh could not reach the server"),
])
def test_ssh_255_says_whether_the_server_was_reached(stderr, said):
    assert classify(255, stderr).message.startswith(said)


def test_ssh_255_host_key_and_auth_are_fatal():
    changed = classify(255, HOST_KEY_CHANGED)
    assert not changed.retryable and changed.kind == "host-key" and "CHANGED" in changed.message
    assert classify(255, "Host key verification failed.\r\n").kind == "host-key"
    auth = classify(255, "syncer@127.0.0.1: Permission denied (publickey).\r\n")
    assert not auth.retryable and auth.kind == "auth"
    key = classify(255, "Load key \"/k\": bad permissions\nsyncer@h: Permission denied (publickey).")
    assert not key.retryable and key.kind == "key"
    assert classify(12, "syncer@h: Permission denied (publickey).").kind == "auth"


def test_rrsync_refusal_is_fatal():
    outcome = classify(12, "/usr/bin/rrsync error: option -s has been disabled on this server\n"
                           "rsync: connection unexpectedly closed (0 bytes received so far) [Receiver]")
    assert not outcome.retryable and outcome.kind == "refused"
    assert classify(1, "rrsync error: option --foo has been disabled on this server").kind == "refused"


def test_an_option_the_server_does_not_know_is_fatal():
    # what rsync 3.5.0 prints when the server's rsync rejects an option: the client exits 12
    outcome = classify(12, "rsync: --bogus-opt: unknown option\n"
                           "rsync error: syntax or usage error (code 1) at main.c(1886) [client=3.5.0]\n"
                           "rsync: connection unexpectedly closed (0 bytes received so far) [Receiver]\n"
                           "rsync error: error in rsync protocol data stream (code 12) at io.c(285) [Receiver=3.5.0]\n")
    assert not outcome.retryable and outcome.kind == "refused" and "--bogus-opt: unknown option" in outcome.message


def test_a_shell_that_is_not_clean_is_fatal():
    outcome = classify(2, "protocol version mismatch -- is your shell clean?\n(see the rsync manpage for an explanation)\n"
                          "rsync error: protocol incompatibility (code 2) at compat.c(625) [Receiver=3.5.0]")
    assert not outcome.retryable


def test_missing_source_folder_at_the_primary_is_retried():
    outcome = classify(3, 'rsync: [sender] change_dir "/library" failed: No such file or directory (2)')
    assert outcome.retryable and outcome.kind == "source"


def test_message_names_the_cause_not_the_summary():
    outcome = classify(255, "ssh: connect to host 127.0.0.1 port 2222: Connection refused\r\n"
                            "rsync: connection unexpectedly closed (0 bytes received so far) [Receiver]\n"
                            "rsync error: unexplained error (code 255) at io.c(232) [Receiver=3.5.0]\n")
    assert outcome.message.endswith("port 2222: Connection refused")


@pytest.mark.parametrize("code", [*MEANINGS, -9, 99, 247, 137])
def test_every_message_is_one_line(code):
    outcome = classify(code, "line one\nline two\r\n")
    assert "\n" not in outcome.message and "\r" not in outcome.message and outcome.message
