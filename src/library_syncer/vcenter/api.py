"""Ask a vCenter to sync one subscribed library now, over the vSphere Automation REST API.

The ``/api`` endpoints (vSphere 7.0 U2 and later) are tried first: ``POST /api/session``
(HTTP Basic), ``POST /api/content/library?action=find`` (by name, type SUBSCRIBED) and
``POST /api/content/subscribed-library/{id}?action=sync``.  When ``/api/session`` answers
404 the older ``/rest`` forms are used for the whole exchange: ``POST
/rest/com/vmware/cis/session``, ``POST /rest/com/vmware/content/library?~action=find`` (the
spec wrapped in ``{"spec": …}``, answers wrapped in ``{"value": …}``) and ``POST
/rest/com/vmware/content/subscribed-library/id:{id}?~action=sync``.  The session is deleted
at the end.  Each failure is one :class:`VcenterError` line; ``retryable`` says whether
trying again may help (a refused login is not retried: that would count towards the
account's lockout).
"""

from __future__ import annotations

import base64
import re
import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp

from .trust import Thumbprint

SESSION_HEADER = "vmware-api-session-id"
_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class VcenterError(Exception):
    """A failed request to vCenter, as one line; ``retryable`` unless trying again cannot help."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class Target:
    """Where and as whom to ask: vCenter's https://address, the user, the library's name or id."""

    url: str
    user: str
    password: str
    library: str
    trust: ssl.SSLContext | Thumbprint


@dataclass(frozen=True)
class SyncAccepted:
    """vCenter accepted the sync request: which API answered and the subscribed library's id."""

    api: str  # "api" or "rest"
    library_id: str


def is_library_id(value: str) -> bool:
    """True when ``value`` is a library id (a UUID) rather than a name."""
    return bool(_ID.fullmatch(value))


class _Exchange:
    """One session with vCenter: the HTTP session, the API form in use and the session id."""

    def __init__(self, http: aiohttp.ClientSession, target: Target) -> None:
        self.http, self.t = http, target
        self.api = "api"
        self.token: str | None = None

    async def call(self, method: str, path: str, *, what: str, json: Any = None,
                   login: bool = False, missing_ok: bool = False) -> tuple[int, Any]:
        if login:  # HTTP Basic, once, to get a session
            basic = base64.b64encode(f"{self.t.user}:{self.t.password}".encode()).decode()
            headers = {"Authorization": f"Basic {basic}"}
        else:
            headers = {SESSION_HEADER: self.token} if self.token else {}
        try:
            async with self.http.request(method, self.t.url + path, json=json, headers=headers,
                                         ssl=self.t.trust) as resp:
                good = resp.status in (200, 201, 204)
                body = await resp.json(content_type=None) if good else await resp.text()
                if good or (resp.status == 404 and missing_ok):
                    return resp.status, body
                detail = _detail(body)
                raise VcenterError(f"{what}: HTTP {resp.status}{detail}",
                                   retryable=resp.status not in (401, 403))
        except aiohttp.ServerFingerprintMismatch as exc:
            raise VcenterError(f"{what}: vCenter's certificate does not match vcenter_thumbprint "
                               f"(it has SHA digest {exc.got.hex(':').upper()})", retryable=False) from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise VcenterError(f"{what}: vCenter's certificate is not trusted ({exc.certificate_error}); "
                               "set vcenter_ca_file or vcenter_thumbprint", retryable=False) from None
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise VcenterError(f"{what}: {_reason(exc)}") from None

    async def login(self) -> None:
        status, body = await self.call("POST", "/api/session", what="login", login=True, missing_ok=True)
        if status == 404:  # before vSphere 7.0 U2: only the /rest endpoints
            self.api = "rest"
            _, body = await self.call("POST", "/rest/com/vmware/cis/session", what="login", login=True)
            body = body.get("value") if isinstance(body, dict) else None
        if not isinstance(body, str) or not body:
            raise VcenterError(f"login: vCenter's {self.api} session answer holds no session id")
        self.token = body

    async def find(self, name: str) -> str:
        spec = {"name": name, "type": "SUBSCRIBED"}
        if self.api == "api":
            _, found = await self.call("POST", "/api/content/library?action=find", what="find library", json=spec)
        else:
            _, body = await self.call("POST", "/rest/com/vmware/content/library?~action=find",
                                      what="find library", json={"spec": spec})
            found = (body.get("value") if isinstance(body, dict) else None) or []
        if not isinstance(found, list) or not found:
            raise VcenterError(f"find library: vCenter has no subscribed library named {name!r} "
                               "(setting vcenter_library)")
        if len(found) > 1:
            raise VcenterError(f"find library: {len(found)} subscribed libraries are named {name!r}: set "
                               "vcenter_library to the id of the one subscribed to this site", retryable=False)
        return str(found[0])

    async def sync(self, library_id: str) -> None:
        path = (f"/api/content/subscribed-library/{library_id}?action=sync" if self.api == "api"
                else f"/rest/com/vmware/content/subscribed-library/id:{library_id}?~action=sync")
        await self.call("POST", path, what="sync library")

    async def logout(self) -> None:
        path = "/api/session" if self.api == "api" else "/rest/com/vmware/cis/session"
        try:
            await self.call("DELETE", path, what="logout")
        except VcenterError:
            pass  # the session expires on its own


async def request_sync(target: Target, *, timeout: float = 30) -> SyncAccepted:
    """Log in, find the subscribed library (unless given its id), ask for a sync, log out."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http:
        ex = _Exchange(http, target)
        await ex.login()
        try:
            library_id = target.library if is_library_id(target.library) else await ex.find(target.library)
            await ex.sync(library_id)
        finally:
            await ex.logout()
        return SyncAccepted(ex.api, library_id)


def _detail(body: object) -> str:
    """The first message of a vAPI error answer, or a short text body."""
    text = str(body).strip()
    if isinstance(body, str) and text.startswith("{"):
        match = re.search(r'"default_message"\s*:\s*"([^"]{1,200})"', text)
        text = match.group(1) if match else text
    text = " ".join(text.split())[:200]
    return f" ({text})" if text else ""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port} ({exc.os_error.strerror or exc.os_error})"
    return str(exc) or type(exc).__name__
