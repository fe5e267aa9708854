"""Pure template checks: OVF file references, ``.mf`` digest lists, one template per item.

The OVF parser refuses any document type declaration, so entity expansion
and external entities cannot be used against it; a malformed descriptor
raises :class:`TemplateError` with a one-line reason.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from urllib.parse import unquote
from typing import NoReturn
from xml.parsers import expat

OVF_EXTS = (".ovf", ".ova")
MF_ALGORITHMS = ("sha1", "sha256", "sha512")
MAX_DESCRIPTOR_BYTES = 16 * 1024 * 1024  # an .ovf is read whole, so at most this much
MAX_MF_BYTES = 1024 * 1024  # an .mf lists one line per file of the template

_MF_LINE_RE = re.compile(r"^(SHA1|SHA256|SHA512)\((.+)\)\s*=\s*([0-9A-Fa-f]+)\s*$")
_DIGEST_LENGTH = {"sha1": 40, "sha256": 64, "sha512": 128}


class TemplateError(ValueError):
    """A descriptor or manifest that cannot be used, with a one-line reason."""


@dataclass(frozen=True)
class MfEntry:
    """One ``ALGO(file)= digest`` line of a ``.mf`` file."""

    algorithm: str  # lower case: sha1, sha256, sha512
    path: str
    digest: str  # lower-case hex


def parse_ovf_references(data: bytes) -> list[str]:
    """The ``ovf:href`` of every ``References/File`` element of an OVF descriptor."""
    if len(data) > MAX_DESCRIPTOR_BYTES:
        raise TemplateError(too_large("descriptor", len(data), MAX_DESCRIPTOR_BYTES))
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    stack: list[str] = []
    hrefs: list[str] = []

    def refuse_doctype(*_: object) -> NoReturn:
        raise TemplateError("document type declarations are not allowed")

    def start(tag: str, attrs: dict[str, str]) -> None:
        local = tag.rsplit(" ", 1)[-1]
        if not stack and local != "Envelope":
            raise TemplateError(f"root element is {local!r}, not an OVF Envelope")
        if local == "File" and stack and stack[-1] == "References":
            href = next((v for k, v in attrs.items() if k.rsplit(" ", 1)[-1] == "href"), None)
            if not href:
                raise TemplateError("a References/File element has no href")
            hrefs.append(href)
        stack.append(local)

    def end(tag: str) -> None:
        stack.pop()

    parser.StartDoctypeDeclHandler = refuse_doctype
    parser.EntityDeclHandler = refuse_doctype
    parser.ExternalEntityRefHandler = refuse_doctype
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise TemplateError(f"not well-formed XML ({expat.errors.messages[exc.code]}, line {exc.lineno})") from None
    return hrefs


def too_large(what: str, size: int, limit: int) -> str:
    """The one-line reason a ``what`` of ``size`` bytes is refused (``limit``: the most allowed)."""
    return f"{what} of {size} bytes is larger than the limit of {limit // (1024 * 1024)} MiB"


def parse_mf(text: str) -> list[MfEntry]:
    """The entries of a ``.mf`` file; blank lines are allowed, anything else malformed is an error."""
    if len(text) > MAX_MF_BYTES:
        raise TemplateError(too_large("manifest", len(text), MAX_MF_BYTES))
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _MF_LINE_RE.match(line.strip())
        if not match:
            raise TemplateError(f"line {number} is not 'SHA256(file)= digest'")
        algorithm, path, digest = match.group(1).lower(), match.group(2), match.group(3).lower()
        if len(digest) != _DIGEST_LENGTH[algorithm]:
            raise TemplateError(f"line {number}: a {algorithm.upper()} digest has {_DIGEST_LENGTH[algorithm]} hex digits")
        entries.append(MfEntry(algorithm, path, digest))
    return entries


def resolve_reference(base_dir: str, href: str, existing: set[str]) -> str | None:
    """Item-relative path an OVF/MF reference names, or None if it leaves the item.

    The reference is taken literally first, then percent-decoded, whichever exists.
    """
    if "://" in href or href.startswith("/"):
        return None
    for candidate in (href, unquote(href)):
        path = posixpath.normpath(posixpath.join(base_dir, candidate)) if base_dir else posixpath.normpath(candidate)
        if path == ".." or path.startswith("../"):
            return None
        if path in existing:
            return path
    return posixpath.normpath(posixpath.join(base_dir, href)) if base_dir else posixpath.normpath(href)


def descriptors(paths: list[str]) -> list[str]:
    """The OVF descriptors (``.ovf``/``.ova``) among item-relative paths, sorted."""
    return sorted(p for p in paths if p.lower().endswith(OVF_EXTS))


def manifests(paths: list[str]) -> list[str]:
    """The ``.mf`` files among item-relative paths, sorted."""
    return sorted(p for p in paths if p.lower().endswith(".mf"))


def template_problems(
    paths: set[str],
    ovf_refs: dict[str, list[str] | str],
    mf_entries: dict[str, list[MfEntry] | str],
    digests: dict[str, dict[str, str]],
) -> list[str]:
    """Why an item cannot be published as a template (empty when it can).

    ``ovf_refs``/``mf_entries`` map each descriptor/manifest to its parsed
    content or to the error text of parsing it; ``digests`` maps item paths to
    the digests computed for them (by lower-case algorithm name).
    """
    problems: list[str] = []
    found = descriptors(sorted(paths))
    if len(found) > 1:
        problems.append(f"{len(found)} OVF descriptors ({', '.join(found)}): one template per item")
    for ovf, refs in sorted(ovf_refs.items()):
        if isinstance(refs, str):
            problems.append(f"{ovf}: {refs}")
            continue
        base = posixpath.dirname(ovf)
        for href in refs:
            target = resolve_reference(base, href, paths)
            if target is None:
                problems.append(f"{ovf}: reference {href!r} points outside the item")
            elif target not in paths:
                problems.append(f"{ovf}: referenced file {href!r} is missing")
    for mf, entries in sorted(mf_entries.items()):
        if isinstance(entries, str):
            problems.append(f"{mf}: {entries}")
            continue
        base = posixpath.dirname(mf)
        for entry in entries:
            target = resolve_reference(base, entry.path, paths)
            if target is None or target not in paths:
                problems.append(f"{mf}: listed file {entry.path!r} is missing")
            elif digests.get(target, {}).get(entry.algorithm) != entry.digest:
                problems.append(f"{mf}: {entry.algorithm.upper()} digest of {entry.path!r} does not match")
    return problems


def needed_algorithms(paths: set[str], mf_entries: dict[str, list[MfEntry] | str]) -> dict[str, set[str]]:
    """Item path -> digest algorithms its ``.mf`` lines need (besides md5)."""
    needed: dict[str, set[str]] = {}
    for mf, entries in mf_entries.items():
        if isinstance(entries, str):
            continue
        base = posixpath.dirname(mf)
        for entry in entries:
            target = resolve_reference(base, entry.path, paths)
            if target is not None and target in paths:
                needed.setdefault(target, set()).add(entry.algorithm)
    return needed
