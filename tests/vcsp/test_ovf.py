"""Unit tests of the pure template checks: safe OVF parsing, .mf lines, template problems."""

from __future__ import annotations

import hashlib

import pytest

from library_syncer.vcsp.ovf import (
    MAX_DESCRIPTOR_BYTES, MAX_MF_BYTES, MfEntry, TemplateError, needed_algorithms, parse_mf,
    parse_ovf_references, template_problems,
)

from .helpers import ovf


def test_references_are_read_with_any_prefix():
    assert parse_ovf_references(ovf("a.vmdk", "sub/b.vmdk").encode()) == ["a.vmdk", "sub/b.vmdk"]
    other_prefix = (b'<o:Envelope xmlns:o="http://schemas.dmtf.org/ovf/envelope/2"><o:References>'
                    b'<o:File o:href="x.vmdk"/></o:References></o:Envelope>')
    assert parse_ovf_references(other_prefix) == ["x.vmdk"]


def test_file_elements_outside_references_are_ignored():
    data = b'<Envelope><DiskSection><File href="no.vmdk"/></DiskSection></Envelope>'
    assert parse_ovf_references(data) == []


@pytest.mark.parametrize("data, reason", [
    (b"<Envelope><References>", "not well-formed"),
    (b"", "not well-formed"),
    (b"<Other/>", "not an OVF Envelope"),
    (b'<Envelope><References><File id="x"/></References></Envelope>', "no href"),
])
def test_malformed_descriptors_are_reported(data, reason):
    with pytest.raises(TemplateError, match=reason):
        parse_ovf_references(data)


def test_entity_expansion_and_external_entities_are_refused():
    laughs = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
              + b"".join(b'<!ENTITY lol%d "%s">' % (i, b"&lol%d;" % (i - 1) * 10 if i > 1 else b"&lol;" * 10)
                         for i in range(1, 10))
              + b']><Envelope><References><File href="&lol9;"/></References></Envelope>')
    with pytest.raises(TemplateError, match="document type"):
        parse_ovf_references(laughs)
    external = (b'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                b'<Envelope><References><File href="&x;"/></References></Envelope>')
    with pytest.raises(TemplateError, match="document type"):
        parse_ovf_references(external)


def test_mf_lines():
    sha = "ab" * 32
    text = f"SHA256(disk 1.vmdk)= {sha.upper()}\n\nSHA1(x.ovf)={'cd' * 20}\r\nSHA512(y)= {'ef' * 64}\n"
    assert parse_mf(text) == [MfEntry("sha256", "disk 1.vmdk", sha), MfEntry("sha1", "x.ovf", "cd" * 20),
                              MfEntry("sha512", "y", "ef" * 64)]
    with pytest.raises(TemplateError, match="line 1"):
        parse_mf("MD5(x)= 00\n")
    with pytest.raises(TemplateError, match="64 hex digits"):
        parse_mf("SHA256(x)= abcd\n")


def test_size_limits():
    with pytest.raises(TemplateError, match=f"descriptor of {MAX_DESCRIPTOR_BYTES + 1} bytes is larger than the limit of 16 MiB"):
        parse_ovf_references(b" " * (MAX_DESCRIPTOR_BYTES + 1))
    with pytest.raises(TemplateError, match=f"manifest of {MAX_MF_BYTES + 1} bytes is larger than the limit of 1 MiB"):
        parse_mf("\n" * (MAX_MF_BYTES + 1))
    assert parse_mf("\n" * MAX_MF_BYTES) == []


def _digests(files: dict[str, bytes]) -> dict[str, dict[str, str]]:
    return {p: {"sha256": hashlib.sha256(b).hexdigest(), "sha1": hashlib.sha1(b).hexdigest()} for p, b in files.items()}


def test_template_problems():
    files = {"vm.ovf": b"o", "disk.vmdk": b"d"}
    paths = set(files)
    good_mf = [MfEntry("sha256", "disk.vmdk", hashlib.sha256(b"d").hexdigest())]
    assert template_problems(paths, {"vm.ovf": ["disk.vmdk"]}, {"vm.mf": good_mf}, _digests(files)) == []
    missing = template_problems(paths, {"vm.ovf": ["disk.vmdk", "disk2.vmdk"]}, {}, _digests(files))
    assert missing == ["vm.ovf: referenced file 'disk2.vmdk' is missing"]
    bad_mf = [MfEntry("sha256", "disk.vmdk", "0" * 64)]
    assert template_problems(paths, {}, {"vm.mf": bad_mf}, _digests(files)) == [
        "vm.mf: SHA256 digest of 'disk.vmdk' does not match"]
    two = template_problems(paths | {"b.ovf"}, {}, {}, _digests(files))
    assert two == ["2 OVF descriptors (b.ovf, vm.ovf): one template per item"]
    escape = template_problems(paths, {"vm.ovf": ["../other/disk.vmdk"]}, {}, _digests(files))
    assert escape == ["vm.ovf: reference '../other/disk.vmdk' points outside the item"]
    assert template_problems(paths, {"vm.ovf": "not well-formed XML"}, {}, {}) == ["vm.ovf: not well-formed XML"]


def test_references_are_relative_to_the_descriptor_folder_and_may_be_percent_encoded():
    paths = {"sub/vm.ovf", "sub/disk 1.vmdk"}
    assert template_problems(paths, {"sub/vm.ovf": ["disk%201.vmdk"]}, {}, {}) == []
    assert template_problems(paths, {"sub/vm.ovf": ["disk 1.vmdk"]}, {}, {}) == []


def test_needed_algorithms():
    mf = {"a.mf": [MfEntry("sha1", "x", "0" * 40), MfEntry("sha256", "x", "0" * 64), MfEntry("sha1", "gone", "0" * 40)]}
    assert needed_algorithms({"x", "a.mf"}, mf) == {"x": {"sha1", "sha256"}}
