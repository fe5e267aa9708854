"""The fleet page as HTML, from the ``/_syncer/api/fleet`` document (pure function, no I/O).

One self-contained page: inline CSS and a little inline script (sorting and filtering the
rows, :mod:`.fleet_publish`), no external assets, every value escaped. A table on a wide
screen, one card per site on a phone; it reloads itself (meta refresh).  Per site: what it
publishes (from its report) and its SSH sessions; then per item the sites without it, and why.
"""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from typing import Any

from . import fleet_publish as fp

STATE_LABELS = {
    "ok": "OK", "syncing": "SYNCING", "failing": "FAILING", "silent": "SILENT",
    "never seen": "NEVER SEEN", "key removed": "KEY REMOVED", "via relay": "VIA RELAY",
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


def _row(s: dict[str, Any], index: int) -> str:
    state = s["state"]
    badge = f'<span class="badge s-{escape(state.replace(" ", "-"))}">{escape(STATE_LABELS.get(state, state))}</span>'
    if s.get("relayed"):
        seen = '<span class="when">no sessions here: it syncs from a relay</span>'
    elif s["last_seen"] is None:
        seen = "never seen (since start)"
    else:
        seen = (f'{escape(human_age(s["seconds_since_seen"]))}'
                f'<span class="when">{escape(_clock(s["last_seen"]))}</span>')
    if s.get("address"):
        seen += f'<span class="when">{escape(s["address"])}</span>'
    sync = s.get("last_sync") or {}
    if s.get("syncing_since"):
        duration = f'running since <span class="when">{escape(_clock(s["syncing_since"]))}</span>'
    else:
        duration = escape(human_duration(sync.get("duration_seconds")))
    result = sync.get("result")
    if result:
        duration += f' <span class="r-{escape(result)}">{escape(RESULT_LABELS.get(result, result))}</span>'
    counts = s.get("sessions", {})
    total = sum(counts.values())
    not_ok = [f"{n} {RESULT_LABELS.get(r, r)}" for r, n in counts.items() if r != "ok" and n]
    if total:
        duration += (f'<span class="when num">{total} session{"s" if total != 1 else ""}'
                     + (f': {escape(", ".join(not_ok))}' if not_ok else "") + "</span>")
    pub = s.get("publication")
    cells = [
        ("Site", f'<span class="site">{escape(s["site"])}</span>'),
        ("Publishes", fp.pub_cell(pub)),
        ("Items", fp.items_cell(pub)),
        ("Last success", fp.success_cell(pub, human_age, _clock)),
        ("Last failure", fp.failure_cell(pub, _clock)),
        ("Report", fp.report_cell(s, human_age)),
        ("Connection", f"{badge} {seen}"),
        ("Last session", duration),
    ]
    data = "".join(f' data-{k}="{escape(v)}"' for k, v in fp.row_data(s, index).items())
    return f"<tr{data}>" + "".join(f'<td data-label="{label}"><div>{value}</div></td>' if value else
                                   f'<td class="e" data-label="{label}"><div>{EMPTY}</div></td>'
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
    rows = "\n".join(_row(s, i) for i, s in enumerate(doc["sites"])) or '<tr><td colspan="8">No site keys.</td></tr>'
    origin = doc.get("origin")
    origin_note = (f'<p class="sub">The primary exports origin version <b>{escape(str(origin["version"]))}</b> '
                   f'(changed {escape(_clock(origin.get("updated")))}).</p>' if origin else "")
    silent_after = human_duration(doc["silent_after_seconds"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{int(refresh_seconds)}">
<title>Fleet – library-syncer</title>
<style>{_CSS}{fp.CSS}</style></head>
<body>
<header><h1>Fleet of sites</h1>
<div class="sub">library-syncer server · updated {escape(_clock(doc["generated_at"]))} ·
sshd {"running" if doc["sshd"]["up"] else "DOWN"} · sshd restarts: {int(doc["sshd"]["restarts"])}</div></header>
<main>
{alert}<div class="summary">{boxes}</div>
{unknown_note}{origin_note}
<h2>Items: which sites do not publish the current version, and why</h2>
{fp.items_table(doc)}
<h2>Sites</h2>
{fp.controls(doc)}
<table id="sites">
<thead><tr><th data-s="name">Site</th><th data-s="rank">Publishes</th><th>Items</th><th data-s="ok">Last success</th>
<th>Last failure</th><th data-s="age">Report</th><th data-s="seen">Connection</th><th>Last session</th></tr></thead>
<tbody>
{rows}
</tbody></table>
</main>
<script>{fp.SCRIPT}</script>
<footer>A site is flagged silent when not seen for more than {escape(silent_after)}; its report is stale
(SILENT) when older than that.
History since {escape(_clock(doc["history_since"]))}; server started {escape(_clock(doc["server_started"]))}.
This page reloads every {int(refresh_seconds)} s.</footer>
</body></html>
"""
