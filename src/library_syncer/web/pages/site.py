"""The HTML status page of a site, rendered from the status document (pure, no I/O).

One self-contained page: inline CSS, no scripts, no external assets (sites are
often offline); it reflows from a phone to a wall screen and refreshes itself.
"""

from __future__ import annotations

from datetime import datetime, timezone, tzinfo
from html import escape
from typing import Any, Iterable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ...util.fmt import human_bytes

REFRESH_SECONDS = 30

_CSS = """
:root{--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;--mut:#57606a;--bg:#f6f8fa;--line:#d0d7de}
*{box-sizing:border-box}
body{margin:0;font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1f2328;background:#fff}
header{padding:1rem clamp(1rem,3vw,3rem);background:var(--bg);border-bottom:1px solid var(--line)}
header h1{margin:0;font-size:clamp(1.3rem,2.5vw,2.2rem)}
main{padding:0 clamp(1rem,3vw,3rem) 2rem}
.badge{display:inline-block;padding:.15em .6em;border-radius:1em;color:#fff;font-weight:600;font-size:.9em;vertical-align:middle}
.ok{background:var(--ok)}.bad{background:var(--bad)}.warn{background:var(--warn)}.run{background:#0969da}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(17rem,1fr));gap:1rem;margin:1rem 0}
.card{border:1px solid var(--line);border-radius:.5rem;padding:.8rem 1rem}
.card.wide{grid-column:1/-1}
.card h2{margin:0 0 .4rem;font-size:1rem;color:var(--mut);text-transform:uppercase;letter-spacing:.04em}
dl{margin:0;display:grid;grid-template-columns:auto 1fr;gap:.15rem .8rem}
dt{color:var(--mut)}dd{margin:0;overflow-wrap:anywhere}
h2.section{font-size:1.15rem;margin:1.5rem 0 .5rem}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.95em}
th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid var(--line);vertical-align:top}
th{background:var(--bg);white-space:nowrap}
td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
.err{color:var(--bad)}.mut{color:var(--mut)}
code{font-size:.9em;overflow-wrap:anywhere}
"""


def site_zone(tz: str | None) -> tzinfo:
    """The zone times are shown in: the site's TZ setting, else (or if unknown) UTC."""
    if tz and tz.lstrip(":") != "UTC":
        try:
            return ZoneInfo(tz.lstrip(":"))
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return timezone.utc


def zone_label(when: datetime) -> str:
    """``EST``, ``CEST``, ``UTC``; ``UTC+04`` where the zone has no letters abbreviation."""
    name = when.strftime("%Z")
    return f"UTC{name}" if name[:1] in "+-" else name


def _time(iso: str | None, now: datetime) -> str:
    """``2026-11-25 04:30 EST (3 h ago)`` in the zone of ``now`` (see :func:`site_zone`), escaped."""
    if not iso:
        return "—"
    when = datetime.fromisoformat(iso)
    when = (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).astimezone(now.tzinfo)
    ago = now.timestamp() - when.timestamp()  # not now - when: one zone subtracts wall times across DST
    return escape(f"{when:%Y-%m-%d %H:%M} {zone_label(when)} ({_ago(ago)})")


def _ago(seconds: float) -> str:
    future, s = seconds < 0, abs(seconds)
    if s < 90:
        text = f"{s:.0f} s"
    elif s < 5400:
        text = f"{s / 60:.0f} min"
    elif s < 2 * 86400:
        text = f"{s / 3600:.1f} h"
    else:
        text = f"{s / 86400:.1f} days"
    return f"in {text}" if future else f"{text} ago"


def _dl(rows: Iterable[tuple[str, str]]) -> str:
    return "<dl>" + "".join(f"<dt>{escape(k)}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _result_badge(run: dict | None) -> str:
    if run is None:
        return '<span class="badge warn">no sync yet</span>'
    if run.get("kind") == "degraded":
        return '<span class="badge warn">degraded</span>'
    return '<span class="badge ok">ok</span>' if run["ok"] else f'<span class="badge bad">{escape(run["kind"])}</span>'


def _policy_card(st: dict[str, Any], now: datetime) -> str:
    """The site's policy: the bandwidth slot in force (and the timetable), which items it holds."""
    bw = st.get("bandwidth") or {}
    bps = bw.get("bytes_per_second")
    limit = ('<span class="badge warn">pause</span> no transfer in this slot' if bw.get("paused")
             else escape(bw.get("limit", "—") + (f" ({human_bytes(bps)}/s)" if bps else "")))
    if bw.get("slot", "always") != "always":
        limit += f" from <code>{escape(bw['slot'])}</code>"
    if bw.get("next_change"):
        limit += f"; {escape(bw['next_limit'])} from {_time(bw['next_change'], now)}"
    include, exclude = st.get("sync_include") or [], st.get("sync_exclude") or []
    items = "; ".join([f"only {', '.join(include)}"] * bool(include) + [f"not {', '.join(exclude)}"] * bool(exclude))
    return _dl([("Bandwidth", limit)]
               + ([("Timetable", f"<code>{escape(bw['setting'])}</code> ({escape(st['tz'])})")]
                  if bw.get("slot", "always") != "always" else [])
               + [("Items", escape(items) if items else "all (no sync_include / sync_exclude)")])


def _rate(run: dict) -> str:
    secs = run.get("duration_seconds") or 0
    return f"{human_bytes(run['wire_bytes'] / secs)}/s" if secs > 0 else "—"


def _vcenter_card(vc: dict[str, Any], now: datetime) -> str:
    """The vCenter told to sync after each publication: its settings and the latest request."""
    req = vc.get("last_request")
    if req is None:
        last = '<span class="mut">none yet (asked after the next publication that changes something)</span>'
    else:
        badge = {"ok": "ok", "failed": "bad"}.get(req["state"], "run")
        last = (f'<span class="badge {badge}">{escape(req["state"])}</span> generation {req["generation"]}, '
                f'{_time(req["ended"] or req["started"], now)}, {req["tries"]} tr{"y" if req["tries"] == 1 else "ies"}'
                + (f' <span class="err">{escape(req["error"])}</span>' if req.get("error") else ""))
    return '<section class="card"><h2>vCenter</h2>' + _dl([
        ("vCenter", f"<code>{escape(vc['url'])}</code>"),
        ("Library", escape(f"{vc['library']} (as {vc['user']})")),
        ("Trust", escape(vc["trust"])),
        ("Last sync request", last),
    ]) + "</section>"


def render_status(st: dict[str, Any]) -> str:
    """The whole page for the status document ``st`` (see ``daemon.status.client_status``)."""
    now = datetime.fromisoformat(st["now"]).astimezone(site_zone(st.get("tz")))
    pub, last = st.get("published"), st.get("last_sync")
    if st.get("running"):
        state = f'<span class="badge run">syncing ({escape(st["running"])})</span> '
    else:
        state = ""
    ready = ('<span class="badge ok">ready</span>' if st["ready"]
             else f'<span class="badge bad">not ready</span> <span class="err">{escape(st["ready_reason"])}</span>')

    published_card = _dl([
        ("Generation", escape(str(pub["generation"]))),
        ("Library version", escape(str(pub["version"]))),
        ("Items", f"{len(pub['items'])} ({escape(human_bytes(pub['bytes']))})"),
        ("Published", _time(pub["published_at"], now)),
    ] + ([("TLS SHA-1", f"<code>{escape(st['tls_thumbprint'])}</code>")] if st.get("tls_thumbprint") else [])
    ) if pub else '<p class="mut">Nothing published yet.</p>'

    if last:
        last_card = _dl([
            ("Result", _result_badge(last) + (f' <span class="err">{escape(last["reason"])}</span>'
                                              if last["reason"] else "")),
            ("Run", f"<code>{escape(str(last.get('run_id') or '—'))}</code>"),
            ("Started", _time(last["started"], now)),
            ("Took", escape(f"{last['duration_seconds']:.0f} s, {last['attempts']} attempt(s)")),
            ("On the wire", escape(f"{human_bytes(last['wire_bytes'])} at {_rate(last)}" + (
                f" (library {human_bytes(last['library_bytes'])})" if last["ok"] else ""))),
        ] + ([("Removed by the site filter", escape(", ".join(last["filtered_out"])))]
             if last.get("filtered_out") else []))
    else:
        last_card = '<p class="mut">No sync has finished yet.</p>'

    schedule_card = _dl([
        ("Next run", _time(st.get("next_run"), now)),
        ("Schedule", f"<code>{escape(st['schedule'])}</code> ({escape(st['tz'])})"),
        ("At start", "sync skipped when a generation is published (sync_skip_initial)"
         if st.get("sync_skip_initial") else "sync"),
        ("Last success", _time(st.get("last_success"), now)),
        ("Peers", escape(st.get("peer") or "—")),
    ] + _upstream_rows(st.get("upstream") or {}))

    vcenter_card = _vcenter_card(st["vcenter"], now) if st.get("vcenter") else ""

    held = st.get("held_back") or {}
    held_card = (
        '<section class="card wide"><h2>Held back</h2><p class="err">These items failed validation at the '
        'primary; the site keeps publishing their last good version.</p><ul>'
        + "".join(f"<li><b>{escape(folder)}</b>: {escape(why)}</li>" for folder, why in sorted(held.items()))
        + "</ul></section>"
    ) if held else ""
    held_tag = ' <span class="badge warn">held back</span>'

    items = "".join(
        f"<tr><td>{escape(str(i['name']))}{held_tag if i.get('folder') in held else ''}</td>"
        f"<td>{escape(str(i['type']).removeprefix('vcsp.'))}</td>"
        f"<td class=num>{escape(human_bytes(i['size']))}</td><td class=num>{escape(str(i['version']))}</td>"
        f"<td>{_time(i['changed'], now)}</td></tr>"
        for i in (pub["items"] if pub else [])
    ) or '<tr><td colspan=5 class="mut">No items.</td></tr>'

    history = "".join(
        f"<tr><td><code>{escape(str(r.get('run_id') or '—'))}</code></td><td>{_time(r['started'], now)}</td>"
        f"<td class=num>{r['duration_seconds']:.0f} s</td><td>{_result_badge(r)}</td>"
        f"<td class=num>{escape(human_bytes(r['wire_bytes']))}</td>"
        f"<td class=err>{escape(r['reason'])}</td></tr>"
        for r in st.get("history", [])
    ) or '<tr><td colspan=6 class="mut">No syncs yet.</td></tr>'

    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<title>{escape(st['site'])} · library-syncer</title><style>{_CSS}</style></head>
<body><header><h1>{escape(st['site'])}</h1><div>{state}{ready}</div></header>
<main>
<div class="cards">
<section class="card"><h2>Published</h2>{published_card}</section>
<section class="card"><h2>Last sync</h2>{last_card}</section>
<section class="card"><h2>Schedule</h2>{schedule_card}</section>
<section class="card"><h2>Site policy</h2>{_policy_card(st, now)}</section>
{vcenter_card}{held_card}
</div>
<h2 class="section">Items</h2>
<div class="scroll"><table><thead><tr><th>Name</th><th>Type</th><th>Size</th><th>Version</th><th>Changed</th></tr></thead>
<tbody>{items}</tbody></table></div>
<h2 class="section">Recent syncs</h2>
<div class="scroll"><table><thead><tr><th>Run</th><th>Started</th><th>Took</th><th>Result</th><th>On the wire</th>
<th>Error</th></tr></thead><tbody>{history}</tbody></table></div>
<p class="mut">As of {_time(st['now'], now)}; refreshes every {REFRESH_SECONDS} s.
<a href="api/status">JSON</a> · <a href="metrics">metrics</a></p>
</main></body></html>
"""


def _upstream_rows(up: dict) -> list[tuple[str, str]]:
    """Status-page rows: which peer served the published library, its origin version, peers not used."""
    rows = []
    if up.get("served_by"):
        via = f" via {', '.join(up['relays'])}" if up.get("relays") else ""
        behind = up.get("relay_behind")
        lag = f" (that relay was {behind} version(s) behind its upstream)" if behind else ""
        rows.append(("Served by", escape(up["served_by"] + via + lag)))
    if up.get("origin_version") is not None:
        rows.append(("Origin version", escape(str(up["origin_version"]))))
    for peer, why in sorted((up.get("peers_not_used") or {}).items()):
        rows.append((f"Not used: {escape(peer)}", f'<span class="err">{escape(why)}</span>'))
    return rows
