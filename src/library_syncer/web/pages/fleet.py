"""The fleet page as HTML, from the ``/_syncer/api/fleet`` document (pure function, no I/O).

One self-contained page: inline CSS, no script, every value escaped. A table on
a wide screen, one card per site on a phone; it reloads itself (meta refresh).
"""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from typing import Any

STATE_LABELS = {
    "ok": "OK", "syncing": "SYNCING", "failing": "FAILING", "silent": "SILENT",
    "never seen": "NEVER SEEN", "key removed": "KEY REMOVED",
}
EMPTY = '<span class="empty">–</span>'
RESULT_LABELS = {"ok": "ok", "error": "error", "lost": "connection lost", "refused": "refused"}

_CSS = """
:root{--bg:#f4f5f7;--fg:#1b1f24;--muted:#5b6470;--card:#fff;--line:#d9dde3;
--ok:#17692f;--okbg:#dcf3e3;--bad:#a1121b;--badbg:#fde0e2;--warn:#7a4a00;--warnbg:#fff0cc;
--info:#0b4f8a;--infobg:#dcebfa;--off:#4b5563;--offbg:#e5e7eb}
*{box-sizing:border-box}
html{font-size:16px}
body{margin:0;font:1rem/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:var(--bg);color:var(--fg)}
header{padding:1rem 1.25rem .5rem}
h1{margin:0;font-size:1.5rem}
.sub{color:var(--muted);font-size:.9rem;margin-top:.25rem}
main{padding:0 1.25rem 1.25rem}
.summary{display:flex;flex-wrap:wrap;gap:.6rem;margin:.75rem 0 1rem}
.count{background:var(--card);border:1px solid var(--line);border-radius:.5rem;padding:.5rem .9rem;min-width:7.5rem}
.count b{display:block;font-size:1.8rem;line-height:1.1}
.count span{color:var(--muted);font-size:.85rem}
.count.bad{border-color:var(--bad)}.count.bad b{color:var(--bad)}
.count.warn{border-color:var(--warn)}.count.warn b{color:var(--warn)}
.alert{background:var(--badbg);color:var(--bad);border:1px solid var(--bad);border-radius:.5rem;padding:.6rem .9rem;margin:.5rem 0 1rem;font-weight:600}
table{width:100%;border-collapse:collapse;background:var(--card);border:1px solid var(--line);border-radius:.5rem}
th,td{text-align:left;padding:.55rem .75rem;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:.8rem;text-transform:uppercase;letter-spacing:.04em;color:var(--muted)}
tr:last-child td{border-bottom:0}
.site{font-weight:600;word-break:break-all}
.badge{display:inline-block;padding:.1rem .5rem;border-radius:1rem;font-size:.8rem;font-weight:700;white-space:nowrap}
.s-ok{background:var(--okbg);color:var(--ok)}.s-syncing{background:var(--infobg);color:var(--info)}
.s-failing,.s-silent,.s-never-seen{background:var(--badbg);color:var(--bad)}
.s-key-removed{background:var(--offbg);color:var(--off)}
.r-ok{color:var(--ok)}.r-error,.r-lost,.r-refused{color:var(--bad);font-weight:600}
.when{display:block;color:var(--muted);font-size:.8rem}
.num{font-variant-numeric:tabular-nums}
.empty{color:var(--muted)}
footer{color:var(--muted);font-size:.85rem;padding:0 1.25rem 1.5rem}
code{font-size:.85em;word-break:break-all}
@media (min-width:1600px){html{font-size:20px}}
@media (max-width:700px){
 table,tbody,tr,td{display:block;width:100%}
 thead{display:none}
 table{border:0;background:none}
 tr{background:var(--card);border:1px solid var(--line);border-radius:.5rem;margin-bottom:.6rem;padding:.3rem 0}
 td{border:0;padding:.2rem .8rem;display:flex;gap:.75rem}
 td::before{content:attr(data-label);flex:0 0 7.5rem;color:var(--muted);font-size:.85rem}
 .count{min-width:0;flex:1 1 30%}
}
"""


def _ts(iso_text: str | None) -> datetime | None:
    if not iso_text:
        return None
    return datetime.strptime(iso_text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def _clock(iso_text: str | None) -> str:
    t = _ts(iso_text)
    return t.strftime("%Y-%m-%d %H:%M UTC") if t else ""


def human_duration(seconds: float | None) -> str:
    """``95.5`` -> ``1 min 36 s``; days, hours, minutes or seconds, two units at most."""
    if seconds is None:
        return ""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    parts = [(s // 86400, "d"), (s % 86400 // 3600, "h"), (s % 3600 // 60, "min"), (s % 60, "s")]
    first = next(i for i, (n, _) in enumerate(parts) if n)
    shown = [f"{n} {unit}" for n, unit in parts[first:first + 2] if n]
    return " ".join(shown)


def human_age(seconds: float | None) -> str:
    """How long ago: ``just now``, ``5 min ago``, ``3 h ago``, ``9 days ago``."""
    if seconds is None:
        return ""
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 2 * 86400:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} days ago"


def _publication(pub: dict[str, Any] | None) -> str:
    """What the site reported it publishes: its origin version, and which items are behind or held back."""
    if pub is None:
        return '<span class="when">no report</span>'
    parts = [f'origin v{escape(str(pub["origin_version"]))}' if pub["origin_version"] is not None else "no origin"]
    if pub["state"] == "current":
        parts.append('<span class="r-ok">current</span>')
    elif pub["versions_behind"]:
        parts.append(f'<span class="r-error">{pub["versions_behind"]} behind</span>')
    if pub["items_behind"]:
        parts.append(f'<span class="when">behind: {escape(", ".join(pub["items_behind"][:5]))}</span>')
    if pub["held_back"]:
        held = "; ".join(f"{k}: {v}" for k, v in sorted(pub["held_back"].items())[:3])
        parts.append(f'<span class="r-error">held back: {escape(held)}</span>')
    if pub["last_result"] not in (None, "ok", "start"):
        parts.append(f'<span class="when">last: {escape(str(pub["last_result"]))} {escape(pub["last_reason"] or "")}</span>')
    return " ".join(parts)


def _row(s: dict[str, Any]) -> str:
    state = s["state"]
    badge = f'<span class="badge s-{escape(state.replace(" ", "-"))}">{escape(STATE_LABELS.get(state, state))}</span>'
    if s["last_seen"] is None:
        seen = "never seen (since start)"
    else:
        seen = (f'{escape(human_age(s["seconds_since_seen"]))}'
                f'<span class="when">{escape(_clock(s["last_seen"]))}</span>')
    sync = s.get("last_sync") or {}
    if s.get("syncing_since"):
        duration = f'running since <span class="when">{escape(_clock(s["syncing_since"]))}</span>'
    else:
        duration = escape(human_duration(sync.get("duration_seconds")))
    result = sync.get("result")
    result_html = (f'<span class="r-{escape(result)}">{escape(RESULT_LABELS.get(result, result))}</span>'
                   if result else "")
    counts = s.get("sessions", {})
    total = sum(counts.values())
    not_ok = [f"{n} {RESULT_LABELS.get(r, r)}" for r, n in counts.items() if r != "ok" and n]
    sessions = f"{total}" + (f' <span class="when">{escape(", ".join(not_ok))}</span>' if not_ok else "")
    cells = [
        ("Site", f'<span class="site">{escape(s["site"])}</span>'),
        ("Status", badge),
        ("Last seen", seen),
        ("Address", escape(s.get("address") or "")),
        ("Last sync", duration),
        ("Result", result_html),
        ("Sessions", f'<span class="num">{sessions}</span>'),
        ("Publishes", _publication(s.get("publication"))),
    ]
    return "<tr>" + "".join(f'<td data-label="{label}"><div>{value or EMPTY}</div></td>'
                            for label, value in cells) + "</tr>"


def render_fleet_page(doc: dict[str, Any], *, refresh_seconds: int = 30) -> str:
    """The whole HTML page for one fleet document (see :meth:`Fleet.snapshot`)."""
    summary = doc["summary"]
    counts = [
        ("sites", "sites", ""),
        ("ok", "ok", ""),
        ("syncing", "syncing now", ""),
        ("failing", "failing", "bad" if summary.get("failing") else ""),
        ("silent", "silent", "bad" if summary.get("silent") else ""),
    ]
    unknown = doc.get("unknown_keys") or {}
    boxes = "".join(
        f'<div class="count {cls}"><b class="num">{int(summary.get(key, 0))}</b><span>{escape(label)}</span></div>'
        for key, label, cls in counts
    )
    boxes += (f'<div class="count {"warn" if unknown.get("attempts") else ""}">'
              f'<b class="num">{int(unknown.get("attempts", 0))}</b><span>unknown keys refused</span></div>')
    alert = "" if doc["sshd"]["up"] else '<div class="alert">sshd is not running: sites cannot sync</div>'
    last = unknown.get("last")
    unknown_note = ""
    if last:
        unknown_note = (f'<p class="sub">Last unknown key: from {escape(str(last.get("address")))} at '
                        f'{escape(_clock(last.get("at")))} (<code>{escape(str(last.get("fingerprint")))}</code>)</p>')
    rows = "\n".join(_row(s) for s in doc["sites"]) or '<tr><td colspan="8">No site keys.</td></tr>'
    silent_after = human_duration(doc["silent_after_seconds"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{int(refresh_seconds)}">
<title>Fleet – library-syncer</title>
<style>{_CSS}</style></head>
<body>
<header><h1>Fleet of sites</h1>
<div class="sub">library-syncer server · updated {escape(_clock(doc["generated_at"]))} ·
sshd {"running" if doc["sshd"]["up"] else "DOWN"} · sshd restarts: {int(doc["sshd"]["restarts"])}</div></header>
<main>
{alert}<div class="summary">{boxes}</div>
{unknown_note}
<table>
<thead><tr><th>Site</th><th>Status</th><th>Last seen</th><th>Address</th><th>Last sync</th><th>Result</th><th>Sessions</th><th>Publishes</th></tr></thead>
<tbody>
{rows}
</tbody></table>
</main>
<footer>A site is flagged silent when not seen for more than {escape(silent_after)}.
History since {escape(_clock(doc["history_since"]))}; server started {escape(_clock(doc["server_started"]))}.
This page reloads every {int(refresh_seconds)} s.</footer>
</body></html>
"""
