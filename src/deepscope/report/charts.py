"""Vega-Lite specifications of the report's charts (plain dicts; the page draws them with vega-embed).

Each builder takes rows (a list of flat dicts, "long" format) and returns one Vega-Lite spec whose data is
inline under a *name*: the page keeps every chart's Vega view, so ``view.data(name)`` reads back exactly the
values that were plotted (the browser tests do). No builder transforms the data inside the spec.
"""
from __future__ import annotations

WIDTH = 470
SCHEMA = "https://vega.github.io/schema/vega-lite/v6.json"   # an identifier only: nothing is fetched


def _spec(name: str, rows: list, **body) -> dict:
    return {"$schema": SCHEMA, "data": {"name": name, "values": rows}, **body}


def _tooltip(*fields):
    return [{"field": f, "type": t, **({"format": fmt} if fmt else {})} for f, t, fmt in fields]


def _integer_axis(rows, x) -> dict:
    """Ticks on whole numbers only (epochs, steps): every value when there are few."""
    values = sorted({r[x] for r in rows})
    return {"values": values, "format": "d"} if len(values) <= 16 else {"tickMinStep": 1, "format": "d"}


def lines(name, rows, x, y, color, *, x_title, y_title, log_y=False, rule_x=None, rule_label=None,
          color_sort=None, height=260, y_format=None, points=True) -> dict:
    """One line per ``color`` value, ``y`` against ``x`` (whole numbers: epochs, steps, k); an optional dashed
    vertical rule at ``rule_x`` (e.g. the best-validation epoch) with a label. Clicking a legend entry
    highlights that line."""
    enc = {
        "x": {"field": x, "type": "quantitative", "title": x_title, "axis": _integer_axis(rows, x)},
        "y": {"field": y, "type": "quantitative", "title": y_title,
              "scale": {"type": "log"} if log_y else {"zero": False},
              **({"axis": {"format": y_format}} if y_format else {})},
        "color": {"field": color, "type": "nominal", "title": None,
                  **({"sort": color_sort} if color_sort else {})},
        "opacity": {"condition": {"param": "pick", "value": 1}, "value": 0.15},
        "tooltip": _tooltip((color, "nominal", None), (x, "quantitative", None), (y, "quantitative", ".4~g")),
    }
    line = {"mark": {"type": "line", "point": bool(points) and len(rows) <= 400},
            "params": [{"name": "pick", "select": {"type": "point", "fields": [color]}, "bind": "legend"}],
            "encoding": enc}
    layers = [line]
    if rule_x is not None:
        layers.append({"data": {"values": [{x: rule_x, "label": rule_label or ""}]},
                       "mark": {"type": "rule", "strokeDash": [4, 4], "color": "#666"},
                       "encoding": {"x": {"field": x, "type": "quantitative"}}})
        layers.append({"data": {"values": [{x: rule_x, "label": rule_label or ""}]},
                       "mark": {"type": "text", "align": "left", "dx": 4, "dy": -4, "baseline": "bottom",
                                "color": "#444", "fontSize": 11},
                       "encoding": {"x": {"field": x, "type": "quantitative"}, "y": {"value": 0},
                                    "text": {"field": "label"}}})
    return _spec(name, rows, width=WIDTH, height=height, layer=layers)


def heatmap(name, rows, *, x, x2, y, value, y_sort, x_title, value_title, log=True, scheme="viridis",
            height_per_row=22) -> dict:
    """A ``y`` × ``x`` heatmap of ``value``: one rectangle from ``x`` to ``x2`` per row, rows of the y axis in
    the order ``y_sort`` (depth order), a logarithmic colour scale unless ``log`` is False."""
    return _spec(name, rows, width=WIDTH, height=max(60, height_per_row * len(y_sort)), mark={"type": "rect"},
                 encoding={
                     "x": {"field": x, "type": "quantitative", "title": x_title, "axis": {"tickMinStep": 1, "format": "d"}},
                     "x2": {"field": x2},
                     "y": {"field": y, "type": "nominal", "sort": y_sort, "title": None},
                     "color": {"field": value, "type": "quantitative", "title": value_title,
                               "scale": {"type": "log" if log else "linear", "scheme": scheme}},
                     "tooltip": _tooltip((y, "nominal", None), (x, "quantitative", None),
                                         (value, "quantitative", ".4~g")),
                 })


def filter_grids(name, rows, *, columns, size, titles) -> dict:
    """Small images side by side, one per ``filter``: one grid per field in ``titles`` (field -> title), each
    with its own colour scale (grey for weights, a diverging scale centred on 0 for changes)."""
    grids = []
    for field, title in titles.items():
        diverging = field == "change"
        grids.append({
            "title": {"text": title, "anchor": "start", "fontSize": 12},
            "facet": {"field": "filter", "type": "ordinal", "title": None, "header": {"labelFontSize": 9}},
            "columns": columns,
            "spec": {"width": size, "height": size, "mark": "rect",
                     "encoding": {
                         "x": {"field": "col", "type": "ordinal", "axis": None},
                         "y": {"field": "row", "type": "ordinal", "axis": None},
                         "color": {"field": field, "type": "quantitative", "title": field,
                                   "scale": {"scheme": "redblue", "domainMid": 0, "reverse": True}
                                   if diverging else {"scheme": "greys"}},
                         "tooltip": _tooltip(("filter", "ordinal", None), (field, "quantitative", ".4~g"))}},
            "resolve": {"scale": {"color": "shared"}},
        })
    return _spec(name, rows, vconcat=grids, resolve={"scale": {"color": "independent"}},
                 config={"facet": {"spacing": 3}, "view": {"stroke": None}})


def confusion(name, rows, classes) -> dict:
    """Counts of (true class, predicted class), with the counts written in the cells."""
    enc = {"x": {"field": "predicted", "type": "nominal", "sort": list(classes), "title": "predicted"},
           "y": {"field": "true", "type": "nominal", "sort": list(classes), "title": "true class"}}
    return _spec(name, rows, width=360, height=360, encoding=enc, layer=[
        {"mark": "rect", "encoding": {
            "color": {"field": "count", "type": "quantitative", "scale": {"type": "symlog", "scheme": "blues"},
                      "title": "images"},
            "tooltip": _tooltip(("true", "nominal", None), ("predicted", "nominal", None),
                                ("count", "quantitative", None))}},
        {"mark": {"type": "text", "fontSize": 10}, "encoding": {
            "text": {"field": "count", "type": "quantitative"},
            "color": {"condition": {"test": "datum.true === datum.predicted", "value": "white"}, "value": "black"}}},
    ])


def grid_heatmaps(name, rows, *, x, y, facet, value, title, log=False, scheme="viridis", domain_mid=None,
                  fmt=".3~g") -> dict:
    """One small heatmap per ``facet`` value (e.g. per activation), ``value`` written in each cell."""
    scale = {"scheme": scheme, **({"type": "log"} if log else {}),
             **({"domainMid": domain_mid} if domain_mid is not None else {})}
    return _spec(name, rows, facet={"field": facet, "type": "nominal", "title": None},
                 spec={"width": 180, "height": 120,
                       "encoding": {"x": {"field": x, "type": "ordinal"}, "y": {"field": y, "type": "nominal"}},
                       "layer": [
                           {"mark": "rect", "encoding": {
                               "color": {"field": value, "type": "quantitative", "title": title, "scale": scale},
                               "tooltip": _tooltip((facet, "nominal", None), (y, "nominal", None),
                                                   (x, "ordinal", None), (value, "quantitative", ".4~g"))}},
                           {"mark": {"type": "text", "fontSize": 10},
                            "encoding": {"text": {"field": value, "type": "quantitative", "format": fmt}}}]})


def by_option(name, rows, *, metric_title) -> dict:
    """The metric of every trial against each option: one panel per ``option`` (rows: option, value, metric)."""
    return _spec(name, rows, facet={"field": "option", "type": "nominal", "title": None}, columns=3,
                 spec={"width": 180, "height": 160, "mark": {"type": "point", "filled": True, "size": 60},
                       "encoding": {"x": {"field": "value", "type": "nominal", "title": None, "sort": None},
                                    "y": {"field": "metric", "type": "quantitative", "title": metric_title,
                                          "scale": {"zero": False}},
                                    "tooltip": _tooltip(("trial", "nominal", None), ("value", "nominal", None),
                                                        ("metric", "quantitative", ".4~g"))}},
                 resolve={"scale": {"x": "independent"}})
