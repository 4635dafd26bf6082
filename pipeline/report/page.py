"""The report page: one self-contained HTML file (plotly.js inlined once, no external fetch).

Plots are plotly figure specs (plain JSON built here, not through plotly's Python figure classes,
which are slow to validate at thousands of points) rendered by the inlined bundle. Without plotly
installed the page still holds every table and figure in text, and says the plots are missing.

The page carries:

* ``<script type="application/json" id="report-data">``: the figures of every section (what the
  tests compare with the pipeline's tables), without the correlation matrices;
* a Content-Security-Policy that forbids every fetch (``default-src 'none'``), so a page opened
  from disk cannot reach the network even by mistake;
* an error hook that writes script errors, ``console.error`` calls and CSP violations into
  ``<pre id="report-errors">``, and ``data-report-status="rendered"`` on ``<html>`` once every
  plot is drawn (what the headless-browser test reads from chromium's ``--dump-dom``).
"""

from __future__ import annotations

from typing import Optional

from ..plan.sizes import human

try:
    from plotly.offline import get_plotlyjs
except ImportError:  # pragma: no cover
    get_plotlyjs = None

from ..progress import duration
from .html import SECTIONS, TITLES, Figures, _clean, _kv, _script_json, _when, esc
from .sections import _expression, _qc, _timeline
from .usage import _disk, _throughput

CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data: blob:; font-src data:; connect-src 'none'; base-uri 'none'; form-action 'none'"
)

HOOK_JS = """
(function(){
  var errs = window.__reportErrors = [];
  function flush(){ var e = document.getElementById('report-errors'); if (e) e.textContent = errs.join('\\n'); }
  window.__reportRecord = function(m){ errs.push(String(m)); flush(); };
  window.addEventListener('error', function(e){
    var t = e.target && e.target !== window ? (' loading ' + (e.target.src || e.target.href || e.target.tagName)) : '';
    window.__reportRecord('error: ' + (e.message || e.type) + t + (e.filename ? ' at ' + e.filename + ':' + e.lineno : ''));
  }, true);
  window.addEventListener('unhandledrejection', function(e){ window.__reportRecord('unhandled rejection: ' + e.reason); });
  document.addEventListener('securitypolicyviolation', function(e){
    window.__reportRecord('blocked by CSP: ' + e.blockedURI + ' (' + e.violatedDirective + ')');
  });
  var ce = console.error;
  console.error = function(){ window.__reportRecord('console.error: ' + Array.prototype.join.call(arguments, ' ')); ce.apply(console, arguments); };
})();
"""

RENDER_JS = """
(function(){
  var figs = JSON.parse(document.getElementById('report-figures').textContent);
  var pending = [];
  figs.forEach(function(f){
    var el = document.getElementById(f.id);
    if (!el) return;
    if (typeof Plotly === 'undefined') { el.textContent = 'plot not drawn: plotly.js is not in this page'; return; }
    try {
      pending.push(Plotly.newPlot(el, f.data, f.layout, {displaylogo: false, responsive: true}));
    } catch (e) { window.__reportRecord('plot ' + f.id + ': ' + e); }
  });
  document.querySelectorAll('table.sortable th').forEach(function(th){
    th.addEventListener('click', function(){
      var table = th.closest('table'), body = table.tBodies[0];
      var i = Array.prototype.indexOf.call(th.parentNode.children, th), asc = th.dataset.dir !== 'asc';
      th.parentNode.querySelectorAll('th').forEach(function(h){ delete h.dataset.dir; });
      th.dataset.dir = asc ? 'asc' : 'desc';
      var key = function(row){ var c = row.cells[i]; return c.hasAttribute('data-v') ? c.getAttribute('data-v') : c.textContent; };
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function(x, y){
        var a = key(x), b = key(y), na = parseFloat(a), nb = parseFloat(b);
        var r = (!isNaN(na) && !isNaN(nb)) ? na - nb : (isNaN(na) !== isNaN(nb) ? (isNaN(na) ? 1 : -1) : a.localeCompare(b));
        return asc ? r : -r;
      });
      rows.forEach(function(r){ body.appendChild(r); });
    });
  });
  var done = function(){
    var res = performance.getEntriesByType('resource').filter(function(r){ return !/^(data|blob):/.test(r.name); });
    res.forEach(function(r){ window.__reportRecord('fetched: ' + r.name); });
    document.documentElement.setAttribute('data-resources', String(res.length));
    document.documentElement.setAttribute('data-report-status', 'rendered');
  };
  Promise.all(pending).then(done, function(e){ window.__reportRecord('plot failed: ' + e); done(); });
})();
"""

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5em;color:#222;background:#fff}
h1{font-size:1.5em} h2{border-bottom:2px solid #1f77b4;padding-bottom:.2em;margin-top:2em} h3{margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0} td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left}
th{background:#eef3f8} table.sortable th{cursor:pointer} table.sortable th[data-dir=asc]::after{content:' \\25B2'}
table.sortable th[data-dir=desc]::after{content:' \\25BC'} td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.outlier td{background:#fde2e2} tr.failed td{background:#eee;color:#777} .flag{color:#b00}
.plot{width:100%;min-height:320px} .note{color:#666;font-style:italic} code{background:#f4f4f4;padding:0 .3em}
.scroll{max-height:36em;overflow:auto;border:1px solid #ddd} #report-errors:empty{display:none}
#report-errors{color:#b00;background:#fee;padding:.5em} nav a{margin-right:1em}
.kv td:first-child{font-weight:600;background:#f7f7f7}
"""


def _overview(sp: dict) -> str:
    o = sp["overview"]
    versions = ", ".join(f"{esc(k)} {esc(v)}" for k, v in (o.get("tool_versions") or {}).items()) or "unknown"
    rows = [
        ("state", esc(o["state"])),
        ("runs planned", f'<span data-k="runs">{o["runs"]}</span>'),
        ("quantified", f'<span data-k="quantified">{o["quantified"]}</span>'),
        ("failed", f'<span data-k="failed">{o["failed"]}</span>'),
        ("to go", f'<span data-k="to_go">{o["to_go"]}</span>'),
        (
            "batches",
            f"{o['batches_done']} of {o['batches']} done ({o['batches_quantified']} quantified, "
            f"{o['batches_downloaded']} downloaded)",
        ),
        ("bytes downloaded", f"{esc(human(o['bytes_downloaded']))} ({o['bytes_downloaded']:,} bytes)"),
        (
            "wall time",
            f"{esc(duration(o['wall_s']))} (started {esc(_when(o['started_at']))}"
            + (f", finished {esc(_when(o['finished_at']))})" if o.get("finished_at") else ")"),
        ),
        (
            "retry failed runs",
            f"<code>{esc(o['retry_command'])}</code> then the same <code>rnaseq-batch run</code> again",
        ),
        ("tool versions", versions),
    ]
    if not o.get("summary"):
        rows.append(("summary.json", '<span class="note">not written yet: read from the task markers</span>'))
    return _kv(rows)


def _failures(sp: dict, output_dir: str) -> str:
    f = sp["failures"]
    if not f:
        return "<p>No run failed.</p>"
    rows = "".join(
        f'<tr data-run="{esc(x["run"])}"><td>{esc(x["run"])}</td><td class="n">{x["batch"]}</td><td>{esc(x["stage"])}</td>'
        f"<td>{esc(x['reason'])}</td><td><code>{esc(x['log'])}</code>{'' if x['log_exists'] else ' (absent)'}</td></tr>"
        for x in f
    )
    return (
        f"<p>{len(f)} run(s) failed. Retry them with <code>{esc(sp['overview']['retry_command'])}</code>, "
        "then the same <code>rnaseq-batch run</code> command again.</p>"
        f'<table class="sortable failures"><thead><tr><th>run</th><th>batch</th><th>stage</th><th>reason</th>'
        f"<th>log</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _species_html(sp: dict, figs: Figures, output_dir: str) -> str:
    name = esc(sp["species"])
    if not sp["planned"]:
        return f'<section class="species" data-species="{name}"><h2>{name}</h2><p class="note">not started (no plan yet)</p></section>'
    bodies = {
        "overview": _overview(sp),
        "qc": _qc(sp, figs),
        "expression": _expression(sp, figs),
        "timeline": _timeline(sp, figs),
        "disk": _disk(sp, figs),
        "throughput": _throughput(sp, figs),
        "failures": _failures(sp, output_dir),
    }
    inner = "".join(
        f'<section class="part" id="{s}-{name}" data-section="{s}"><h3>{TITLES[s]}</h3>{bodies[s]}</section>'
        for s in SECTIONS
    )
    return f'<section class="species" id="sp-{name}" data-species="{name}"><h2>{name}</h2>{inner}</section>'


def _public(report: dict) -> dict:
    """The data block: everything but the correlation matrices."""
    out = dict(report)
    out["species"] = []
    for sp in report["species"]:
        sp = dict(sp)
        if "expression" in sp:
            sp["expression"] = {k: v for k, v in sp["expression"].items() if k != "corr"}
        out["species"].append(sp)
    return _clean(out)


def render(report: dict, plotly_js: Optional[str] = None) -> str:
    """The page for :func:`pipeline.report.data.collect`'s ``report``."""
    if plotly_js is None and get_plotlyjs is not None:
        plotly_js = get_plotlyjs()
    figs = Figures()
    species = "".join(_species_html(sp, figs, report["output_dir"]) for sp in report["species"])
    nav = " ".join(f'<a href="#sp-{esc(sp["species"])}">{esc(sp["species"])}</a>' for sp in report["species"])
    live = report["liveness"]
    no_plotly = (
        "" if plotly_js else '<p class="note">plotly is not installed: the plots are missing (pip install plotly)</p>'
    )
    return "".join(
        [
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
            f"<title>rnaseq-batch report: {esc(report['output_dir'])}</title>",
            f"<style>{CSS}</style><script>{HOOK_JS}</script></head><body>",
            f"<h1>rnaseq-batch report</h1><p><code>{esc(report['output_dir'])}</code>, made {esc(_when(report['generated_at']))}; "
            f"run {esc(live.get('state'))}: {esc(live.get('why'))}.</p>",
            '<pre id="report-errors"></pre>',
            no_plotly,
            f"<nav>{nav}</nav>" if len(report["species"]) > 1 else "",
            species or '<p class="note">no species has started under this folder</p>',
            f'<script type="application/json" id="report-data">{_script_json(_public(report))}</script>',
            f'<script type="application/json" id="report-figures">{_script_json(figs.specs)}</script>',
            f"<script>{plotly_js}</script>" if plotly_js else "",
            f"<script>{RENDER_JS}</script></body></html>\n",
        ]
    )
