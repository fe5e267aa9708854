"""The fleet page's parts about what sites publish (pure functions, no I/O): the cells of a site's row,
the filter bar, the per-item table, and the little inline script that sorts and filters the rows.

The script keeps its state in the address's fragment (``#f=behind&s=ok&q=north``), so a bookmark or
the page's own reload shows the same view; without script every row is shown, worst first.
"""

from __future__ import annotations

from html import escape
from typing import Any, Callable

PUB_LABELS = {"no report": "NO REPORT", "silent": "SILENT", "held back": "HELD BACK", "behind": "BEHIND",
              "unknown": "UNKNOWN", "current": "CURRENT"}
PUB_ORDER = tuple(PUB_LABELS)  # worst first, as fleet/truth.py's PUB_STATES
FILTERS = ("current", "behind", "held back", "silent", "no report", "unknown")
SORTS = (("rank", "worst first"), ("name", "name"), ("ok", "last success, oldest first"),
         ("age", "report, oldest first"), ("ver", "origin version, lowest first"), ("seen", "last seen, longest ago"))
ITEM_WHY_SHOWN = 200  # sites listed under one item (the JSON API has them all)
NEVER = 1e12  # sort value of "never"

CSS = """
.controls{display:flex;flex-wrap:wrap;gap:.4rem;align-items:center;margin:.25rem 0 .75rem}
.controls button{font:inherit;font-size:.85rem;border:1px solid var(--line);background:var(--card);color:var(--fg);
border-radius:1rem;padding:.3rem .75rem;cursor:pointer}
.controls button b{font-variant-numeric:tabular-nums}
.controls button[aria-pressed=true]{background:var(--fg);color:var(--card);border-color:var(--fg)}
.controls input,.controls select{font:inherit;font-size:.9rem;padding:.3rem .5rem;border:1px solid var(--line);
border-radius:.4rem;background:var(--card);color:var(--fg)}
.controls input{flex:1 1 10rem;min-width:8rem;max-width:20rem}
#shown{color:var(--muted);font-size:.85rem}
h2{font-size:1.15rem;margin:1.5rem 0 .5rem}
.p-current{background:var(--okbg);color:var(--ok)}.p-behind,.p-no-report{background:var(--badbg);color:var(--bad)}
.p-held-back{background:var(--warnbg);color:var(--warn)}.p-silent,.p-unknown{background:var(--offbg);color:var(--off)}
.s-via-relay{background:var(--infobg);color:var(--info)}
.stale{color:var(--bad);font-weight:700}
.why{margin:.25rem 0 0;padding-left:1.1rem;font-size:.85rem}
.why li{margin:.1rem 0}
details summary{cursor:pointer}
th[data-s]{cursor:pointer;text-decoration:underline dotted}
tr[hidden]{display:none!important}
#sites td,#items td{padding:.4rem .6rem;font-size:.92rem}
#sites td:first-child{min-width:10.5rem}
#sites .site,#items .site{word-break:normal;overflow-wrap:anywhere}
@media (max-width:700px){td.e{display:none}#sites td:first-child{min-width:0}
 #items td{display:inline-block;width:auto;padding:.1rem .6rem}
 #items td::before{content:attr(data-label) ": ";display:inline;flex:none}
 #items td>div,#items .when{display:inline}
 #items td:first-child,#items td:last-child{display:block}
 #items td:first-child::before,#items td:last-child::before{content:none}}
"""

SCRIPT = """
(function(){
var body=document.querySelector('#sites tbody'),rows=[].slice.call(body.querySelectorAll('tr[data-name]'));
var dir={rank:1,name:1,ok:-1,age:-1,ver:1,seen:-1};
rows.forEach(function(r,i){r.dataset.i=i;});
function state(){var h={f:'all',s:'rank',q:''};location.hash.slice(1).split('&').forEach(function(p){
 var kv=p.split('=');if(kv[0]&&kv.length>1)h[kv[0]]=decodeURIComponent(kv[1]);});return h;}
function set(k,v){var h=state();h[k]=v;history.replaceState(null,'','#f='+encodeURIComponent(h.f)+'&s='+
 encodeURIComponent(h.s)+'&q='+encodeURIComponent(h.q));apply();}
function apply(){var h=state(),q=h.q.toLowerCase(),n=0,d=dir[h.s]||1;
 rows.forEach(function(r){var ok=(h.f==='all'||r.dataset.tags.indexOf(' '+h.f+' ')>=0)&&
  (!q||r.dataset.name.indexOf(q)>=0);r.hidden=!ok;if(ok)n++;});
 rows.slice().sort(function(a,b){var x=a.dataset[h.s],y=b.dataset[h.s],c;
  if(h.s==='name'){c=x<y?-1:(x>y?1:0);}else{c=(parseFloat(x)-parseFloat(y))*d;}
  return c||(a.dataset.i-b.dataset.i);}).forEach(function(r){body.appendChild(r);});
 [].forEach.call(document.querySelectorAll('.controls button'),function(b){
  b.setAttribute('aria-pressed',b.dataset.f===h.f?'true':'false');});
 document.getElementById('sort').value=h.s;var box=document.getElementById('q');if(box.value!==h.q)box.value=h.q;
 document.getElementById('shown').textContent=n+' of '+rows.length+' sites shown';}
[].forEach.call(document.querySelectorAll('.controls button'),function(b){
 b.addEventListener('click',function(){set('f',b.dataset.f);});});
[].forEach.call(document.querySelectorAll('th[data-s]'),function(t){
 t.addEventListener('click',function(){set('s',t.dataset.s);});});
document.getElementById('sort').addEventListener('change',function(e){set('s',e.target.value);});
document.getElementById('q').addEventListener('input',function(e){set('q',e.target.value);});
window.addEventListener('hashchange',apply);apply();
})();
"""


def tag_class(state: str) -> str:
    return state.replace(" ", "-")


def row_data(s: dict[str, Any], rank_of_session: int) -> dict[str, str]:
    """The ``data-`` attributes the script sorts and filters a site's row by."""
    pub = s.get("publication")
    state = pub["state"] if pub else "no report"
    tags = [tag_class(t) for t in (pub["tags"] if pub else ["no report"])]
    if s.get("relayed"):
        tags.append("via-relay")
    if not s.get("key") and not s.get("relayed"):
        tags = ["key-removed"]
    rank = (PUB_ORDER.index(state) if state in PUB_ORDER else len(PUB_ORDER)) * 100_000 + rank_of_session
    return {
        "name": s["site"].lower(), "tags": f" {' '.join(tags)} ", "rank": str(rank),
        "ok": f"{pub['seconds_since_success']:.0f}" if pub and pub.get("seconds_since_success") is not None
        else str(NEVER),
        "age": f"{pub['report_age_seconds']:.0f}" if pub and pub.get("report_age_seconds") is not None else str(NEVER),
        "ver": str(pub["origin_version"]) if pub and pub.get("origin_version") is not None else "-1",
        "seen": f"{s['seconds_since_seen']:.0f}" if s.get("seconds_since_seen") is not None else str(NEVER),
    }


def pub_cell(pub: dict[str, Any] | None) -> str:
    """The state badge and the origin version a site publishes."""
    state = pub["state"] if pub else "no report"
    badge = f'<span class="badge p-{tag_class(state)}">{PUB_LABELS.get(state, escape(state))}</span>'
    if pub is None:
        return badge
    parts = [badge, f'<span class="when">origin v{escape(str(pub["origin_version"]))}'
             + (f', {int(pub["versions_behind"])} behind' if pub.get("versions_behind") else "") + "</span>"
             if pub.get("origin_version") is not None else '<span class="when">no origin version</span>']
    other = [t for t in pub["tags"] if t != state and t != "current"]
    if other:
        parts.append(f'<span class="when">also {escape(", ".join(other))}</span>')
    return " ".join(parts)


def _names(names: list[str], limit: int = 4) -> str:
    return escape(", ".join(names[:limit]) + (f" … (+{len(names) - limit})" if len(names) > limit else ""))


def items_cell(pub: dict[str, Any] | None) -> str:
    """Items current / behind / held back (with the reason) / missing."""
    if pub is None:
        return ""
    parts = [f'<span class="num">{int(pub["items_current"])} current</span>']
    if pub["items_behind"]:
        parts.append(f'<span class="when r-error">behind: {_names(pub["items_behind"])}</span>')
    for name, why in sorted(pub["held_back"].items())[:3]:
        parts.append(f'<span class="when r-error">held back {escape(name)}: {escape(why[:160])}</span>')
    if len(pub["held_back"]) > 3:
        parts.append(f'<span class="when">… {len(pub["held_back"]) - 3} more held back</span>')
    if pub["items_missing"]:
        parts.append(f'<span class="when">not published: {_names(pub["items_missing"])}</span>')
    return " ".join(parts)


def success_cell(pub: dict[str, Any] | None, age: Callable[[float | None], str], clock: Callable[[Any], str]) -> str:
    if pub is None or not pub.get("last_success"):
        return "" if pub is None else '<span class="r-error">never</span>'
    return f'{escape(age(pub["seconds_since_success"]))}<span class="when">{escape(clock(pub["last_success"]))}</span>'


def failure_cell(pub: dict[str, Any] | None, clock: Callable[[Any], str]) -> str:
    last = (pub or {}).get("last_failure")
    if not last:
        return ""
    reason = str(last.get("reason") or "")
    return (f'<span class="r-error">{escape(str(last.get("kind")))}</span> {escape(reason[:200])}'
            f'{"…" if len(reason) > 200 else ""}<span class="when">{escape(clock(last.get("at")))}</span>')


def report_cell(s: dict[str, Any], age: Callable[[float | None], str]) -> str:
    """How old the report is (STALE past the silent period) and the relays it came through."""
    pub = s.get("publication")
    if pub is None:
        return '<span class="when">never reported</span>'
    text = escape(age(pub["report_age_seconds"])) if pub.get("report_age_seconds") is not None else ""
    if pub.get("stale"):
        text = f'<span class="stale">STALE</span> {text}'
    via = pub.get("via") or []
    path = f'<span class="when">via {escape(" → ".join(via))}</span>' if via else '<span class="when">direct</span>'
    return text + path + (f'<span class="when">tool {escape(str(pub["tool_version"]))}</span>'
                          if pub.get("tool_version") else "")


def controls(doc: dict[str, Any]) -> str:
    """The filter buttons (with counts), the sort choice and the name search."""
    summary = doc.get("publication_summary") or {}
    total = sum(summary.values())
    buttons = [f'<button type="button" data-f="all" aria-pressed="true">all <b>{total}</b></button>']
    buttons += [f'<button type="button" data-f="{tag_class(f)}">{escape(f)} <b>{int(summary.get(f, 0))}</b></button>'
                for f in FILTERS if f != "unknown" or summary.get(f)]
    relayed = sum(1 for s in doc["sites"] if s.get("relayed"))
    if relayed:
        buttons.append(f'<button type="button" data-f="via-relay">via relay <b>{relayed}</b></button>')
    options = "".join(f'<option value="{k}">{escape(label)}</option>' for k, label in SORTS)
    return (f'<div class="controls" role="group" aria-label="Filter sites">{"".join(buttons)}'
            f'<select id="sort" aria-label="Sort by">{options}</select>'
            f'<input id="q" type="search" placeholder="site name" aria-label="Site name">'
            f'<span id="shown">{len(doc["sites"])} sites</span></div>')


def items_table(doc: dict[str, Any]) -> str:
    """Per item of the origin manifest: its version, sites current, and every other site with why."""
    items = doc.get("items") or {}
    if not items:
        return '<p class="sub">No origin manifest yet: the per-item view appears once the server has read the library.</p>'
    rows = []
    for name, item in sorted(items.items(), key=lambda kv: (-len(kv[1]["why"]), kv[0])):
        why = item["why"]
        listed = "".join(f'<li><b>{escape(site)}</b>: {escape(text)}</li>'
                         for site, text in list(why.items())[:ITEM_WHY_SHOWN])
        more = f'<li>… {len(why) - ITEM_WHY_SHOWN} more (all in api/fleet)</li>' if len(why) > ITEM_WHY_SHOWN else ""
        detail = (f'<details><summary>{len(why)} site{"s" if len(why) != 1 else ""}</summary>'
                  f'<ul class="why">{listed}{more}</ul></details>') if why else '<span class="r-ok">none</span>'
        not_current = len(item["sites_not_current"])
        cells = [("Item", f'<span class="site">{escape(name)}</span>'),
                 ("Version", f'<span class="num">{escape(str(item["version"]))}</span>'),
                 ("Current", f'<span class="num r-ok">{int(item["sites_current"])}</span>'),
                 ("Not current", f'<span class="num{" r-error" if not_current else ""}">{not_current}</span>'
                  + (f' <span class="when">+{item["sites_no_report"]} no report</span>'
                     if item["sites_no_report"] else "")),
                 ("Sites without it, and why", detail)]
        rows.append("<tr>" + "".join(f'<td data-label="{label}"><div>{value}</div></td>' for label, value in cells)
                    + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("Item", "Version", "Current", "Not current", "Sites without it, and why"))
    return f'<table id="items"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
