"""The report as one self-contained HTML page: the template, the charts' data, and the chart library inline.

The charts are Vega-Lite specifications drawn in the browser by Vega, Vega-Lite and vega-embed, whose
JavaScript (about 0.9 MB, minified) comes from the ``vl-convert-python`` package and is written into the page,
so the page needs no network: it works from a ``file://`` URL and as a mail attachment.
"""
from __future__ import annotations

import datetime
import functools
import json
from pathlib import Path

import jinja2

from .. import __version__, files
from ..errors import DataError
from . import panels as _panels
from . import source

GENERATOR = '<meta name="generator" content="deepscope report">'


@functools.lru_cache(maxsize=1)
def vega_javascript() -> str:
    """Vega + Vega-Lite + vega-embed as one classic script (sets ``window.vegaEmbed``), made once per process."""
    # vl_convert is a 30 MB native module that takes ~1.4 s to produce the bundle: loaded only to write a report
    import vl_convert
    return vl_convert.javascript_bundle()


@functools.lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.PackageLoader("deepscope.report", "."),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True)
    return env.get_template("template.html")


def _specs_json(all_panels) -> str:
    specs = {p.id: p.spec for p in all_panels if p.spec is not None}
    # inside <script>: "</" would end the element early
    return json.dumps(specs, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


def render(runs: list[source.RunData], live: bool = False, refresh: int = 10, test=None) -> str:
    """The HTML text of the report of ``runs`` (several: side by side, with a comparison first). ``live``: a
    run still training, whose page reloads itself every ``refresh`` seconds (0: never) and leaves out what needs
    a pass over the test set. ``test``: the first run's test set when the caller holds it (see
    :class:`~deepscope.report.LiveReport`)."""
    sections = [{"data": run, "facts": _panels.summary(run), "panels": _panels.run_panels(run, i, live=live, test=test if i == 0 else None)}
                for i, run in enumerate(runs)]
    comparison = _panels.comparison_panels(runs) if len(runs) > 1 else []
    all_panels = comparison + [p for s in sections for p in s["panels"]]
    title = (f"deepscope report: {runs[0].name}" if len(runs) == 1 else
             f"deepscope report: {len(runs)} runs")
    return _template().render(
        title=title, runs=sections, comparison=comparison, refresh=refresh if live and refresh else None,
        written=datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"), version=__version__,
        specs_json=jinja2.filters.Markup(_specs_json(all_panels)),
        vega_js=jinja2.filters.Markup(vega_javascript()))


def default_out(paths) -> Path:
    """RUN/report.html for one run; report.html in the current folder for several."""
    paths = [Path(p) for p in paths]
    return paths[0] / "report.html" if len(paths) == 1 else Path("report.html")


def write_report(paths, out=None, live: bool = False, refresh: int = 10) -> Path:
    """Write the report of the run folders ``paths`` to ``out`` (default :func:`default_out`) and return its path.

    Args:
        paths: run folders (a folder of runs, like ``deepscope book ch6``'s, stands for the runs in it).
        out: the HTML file. An existing file is replaced only if it is a deepscope report.
        live: the report of a run still training: it reloads itself every ``refresh`` seconds and leaves out
            what needs a pass over the test set (misclassified images, confusion matrix).
    """
    paths = list(paths)
    if not paths:
        raise DataError("report: name at least one run folder")
    runs = [source.open_run(p) for p in source.expand(paths)]
    out = Path(out) if out is not None else default_out(paths)
    if out.is_dir():
        raise DataError(f"report: {out} is a folder; --out names the HTML file to write")
    if out.exists() and GENERATOR not in out.read_text(encoding="utf-8", errors="replace")[:2000]:
        raise DataError(f"report: {out} exists and is not a deepscope report; choose another --out")
    html = render(runs, live=live, refresh=refresh)
    return files.atomic_write(out, html)
