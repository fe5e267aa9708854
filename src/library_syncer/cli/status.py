"""``library-syncer status``: ask a running client how it is, or to sync now.

Talks to the client's ``/_syncer/`` API (the same host by default), sending the
admin token when one is configured.  When the site serves HTTPS (TLS_NAME or
TLS_CUSTOM_CERT) it asks the HTTPS port, or the status port if one is set.  Exit 0 when the answer came (and, with
``--wait``, the sync succeeded); 1 when the client cannot be reached, refused or
the awaited sync failed; 2 for a bad setting.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from datetime import datetime
from urllib.parse import urljoin, urlsplit

import aiohttp
import click

from . import setting_options, settings_from
from ..config import AdminSettings, Settings, TlsSettings
from ..util.fmt import human_bytes
from ..util.net import is_wildcard
from ..errors import ConfigError, OperationFailed
from ..web.pages.site import site_zone
from ..web.rules import is_loopback



def default_base_url(s: Settings) -> str:
    """The client's ``/_syncer/`` URL as seen from its own host (the port and scheme it serves them on)."""
    host = "127.0.0.1" if is_wildcard(s.http_host) else s.http_host
    host = f"[{host}]" if ":" in host else host
    if s.status_port:  # served with the certificate files if any; plain HTTP beside Caddy
        scheme, port = ("https" if s.tls_files() else "http"), s.status_port
    elif s.tls_files() or s.tls_name:
        scheme, port = "https", s.https_port or s.http_port
    else:
        scheme, port = "http", s.http_port
    return f"{scheme}://{host}:{port}/_syncer/"


def tls_check(url: str, s: Settings) -> ssl.SSLContext | bool | None:
    """How to check the server certificate of ``url`` (aiohttp's ``ssl``).

    The site's own certificate file when it has one and the URL is this host's: trusted as it is
    (its name is the public host name, not 127.0.0.1, so the name is not checked).  Other loopback
    URLs (Caddy's ACME certificate, or a certificate file this user cannot read): not checked,
    nothing leaves the host.  Else: normal checks.
    """
    parts = urlsplit(url)
    if parts.scheme != "https":
        return None
    loopback = is_loopback(parts.hostname)
    files = s.tls_files()
    if files and (loopback or parts.hostname == s.http_host):
        try:
            ctx = ssl.create_default_context(cafile=str(files[0]))
        except (OSError, ssl.SSLError) as exc:
            if loopback:
                return False
            raise ConfigError(f"setting tls_cert: cannot use certificate {files[0]} to check the client "
                              f"({getattr(exc, 'strerror', None) or exc})") from None
        ctx.check_hostname = False
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the site's certificate itself is the anchor
        return ctx
    return False if loopback else None


async def _call(method: str, url: str, token: str | None,
                tls: ssl.SSLContext | bool | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
            check = True if tls is None else tls  # None: aiohttp's default checks
            async with session.request(method, url, headers=headers, ssl=check) as resp:
                if resp.status in (401, 403):
                    why = (await resp.text()).strip() or "admin token missing or wrong (setting admin_token)"
                    raise OperationFailed(f"the client at {url} refused: HTTP {resp.status}: {why}")
                try:
                    return resp.status, await resp.json(content_type=None)
                except ValueError:
                    raise OperationFailed(f"{url}: HTTP {resp.status}, not a library-syncer status answer") from None
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        raise OperationFailed(f"cannot reach the client at {url}: {exc or type(exc).__name__}") from None


def _in_site_zone(when: str | None, tz: str | None) -> str:
    """A time of the status document (UTC) in the site's zone with its offset, as its schedule reads."""
    if not when:
        return "-"
    return datetime.fromisoformat(when).astimezone(site_zone(tz)).isoformat(timespec="seconds")


def _print(st: dict) -> None:
    pub, last = st.get("published"), st.get("last_sync")
    click.echo(f"{st['site']}: {'ready' if st['ready'] else 'NOT READY (' + st['ready_reason'] + ')'}")
    if pub:
        click.echo(f"  published: generation {pub['generation']}, library version {pub['version']}, "
                   f"{len(pub['items'])} items, {human_bytes(pub['bytes'])}")
    else:
        click.echo("  published: nothing yet")
    if last:
        result = "ok" if last["ok"] else f"FAILED ({last['kind']}): {last['reason']}"
        click.echo(f"  last sync: {last['run_id']} {result}; started {last['started']}, "
                   f"{last['duration_seconds']:.0f}s, {human_bytes(last['wire_bytes'])} on the wire")
    if st.get("running"):
        click.echo(f"  running:   {st['running']}")
    click.echo(f"  next run:  {_in_site_zone(st.get('next_run'), st.get('tz'))} (schedule {st['schedule']}, {st['tz']})")
    for item in (pub or {}).get("items", []):
        click.echo(f"    {item['name']:<40} {str(item['type']):<10} {human_bytes(item['size']):>10}  "
                   f"v{item['version']}")


@click.command("status")
@click.option("--url", default=None, help="The client's status URL (default: this host's, from the settings).")
@click.option("--json", "as_json", is_flag=True, help="Print the status document as JSON.")
@click.option("--sync-now", is_flag=True, help="Ask the client to start a sync now (not doubled if one runs).")
@click.option("--wait", "wait_seconds", type=float, default=None, metavar="SECONDS",
              help="With --sync-now: wait up to SECONDS for that sync to finish; exit 1 if it failed.")
@setting_options("http_host", "http_port", "https_port", "status_port", AdminSettings, TlsSettings)
def command(url: str | None, as_json: bool, sync_now: bool, wait_seconds: float | None, **values) -> None:
    """Show a running client's status (published library, last and next sync), or start a sync."""
    settings = settings_from(click.get_current_context(), values)
    base = url or default_base_url(settings)
    base = base if base.endswith("/") else base + "/"
    token = settings.admin_token_value()
    tls = tls_check(base, settings)
    if sync_now:
        code, answer = asyncio.run(_call("POST", urljoin(base, "api/sync"), token, tls))
        run_id = answer.get("run_id") or answer.get("running")
        click.echo(f"sync started: {run_id}" if code == 202 else f"a sync is already running: {run_id}")
        if wait_seconds is None:
            return
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            _, st = asyncio.run(_call("GET", urljoin(base, "api/status"), token, tls))
            last = st.get("last_sync") or {}
            if last.get("run_id") == run_id:
                if not last["ok"]:
                    raise OperationFailed(f"sync {run_id} failed: {last['reason']}")
                click.echo(f"sync {run_id} succeeded")
                return
            time.sleep(1)
        raise OperationFailed(f"sync {run_id} still running after {wait_seconds:.0f}s")
    _, st = asyncio.run(_call("GET", urljoin(base, "api/status"), token, tls))
    if as_json:
        click.echo(json.dumps(st, indent=2))
    else:
        _print(st)
