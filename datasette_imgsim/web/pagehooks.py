"""Additions to Datasette's own pages: the table page's gallery link and image column
placement, the row page's similar strip on 0.65, and hiding _imgsim_ tables on 0.65."""
from __future__ import annotations

import json

from .decorations import indexed_tables
from .permissions import is_datasette_1
from .render import config

INTERNAL_PREFIX = "_imgsim_"

# The table page: a "Gallery" link (with the page's filters) above the table and, when the
# plugin config says image_column_first, the image column moved next to the key column.
TABLE_SCRIPT = """
(function () {
  var cfg = %s;
  var table = document.querySelector("table.rows-and-columns");
  var header = document.querySelector(".page-header");
  var anchor = header || document.querySelector(".table-wrapper") || table;
  if (anchor) {
    var p = document.createElement("p");
    p.className = "imgsim-gallery-link";
    var a = document.createElement("a");
    a.href = cfg.gallery + location.search;
    a.textContent = "\u25A6 View these photos as a gallery";
    a.style.cssText = "display:inline-block;padding:0.3em 0.8em;border:1px solid #1a5ea8;border-radius:4px;text-decoration:none;color:#0b4a7a;background:#eef4fa";
    p.appendChild(a);
    if (header) { header.after(p); } else { anchor.parentNode.insertBefore(p, anchor); }
  }
  if (!cfg.first || !table) { return; }
  var th = table.querySelector('thead th[data-column="' + CSS.escape(cfg.column) + '"]');
  var cls = th && Array.prototype.filter.call(th.classList, function (c) { return c.indexOf("col-") === 0; })[0];
  if (!cls) { return; }
  Array.prototype.forEach.call(table.rows, function (tr) {
    var cell = tr.querySelector(":scope > ." + CSS.escape(cls));
    var target = tr.cells[cfg.after];
    if (cell && target && cell !== target) { tr.insertBefore(cell, target); }
  });
  // Datasette's phone layout labels cells by position: label them in the new order.
  var names = Array.prototype.map.call(table.querySelectorAll("thead th"), function (t) {
    return t.getAttribute("data-column") || t.textContent.trim();
  });
  var style = document.createElement("style");
  style.textContent = "@media only screen and (max-width: 576px) {" + names.map(function (n, i) {
    return ".rows-and-columns td:nth-of-type(" + (i + 1) + "):before { content: " + JSON.stringify(n) + "; }";
  }).join("") + "}";
  document.head.appendChild(style);
})();
"""

# The row page on 0.65: fetch the strip and put it under the row's table.
ROW_SCRIPT = """
(function () {
  var anchor = document.querySelector(".table-wrapper") || document.querySelector("table.rows-and-columns");
  if (!anchor) { return; }
  fetch(%s, {credentials: "same-origin"}).then(function (r) { return r.ok ? r.text() : ""; })
    .then(function (html) {
      if (!html) { return; }
      var box = document.createElement("div");
      box.innerHTML = html;
      anchor.after(box);
      box.querySelectorAll("script").forEach(function (old) {
        var s = document.createElement("script");
        s.textContent = old.textContent;
        old.replaceWith(s);
      });
    });
})();
"""


def extra_body_script(datasette, database, table, columns, view_name, request):
    if not database or not table or view_name not in ("table", "row"):
        return None

    async def inner():
        found = (await indexed_tables(datasette, database)).get(table)
        if not found:
            return ""
        base = datasette.urls.table(database, table)
        if view_name == "row":
            pks = (getattr(request, "url_vars", None) or {}).get("pks")
            if is_datasette_1(datasette) or not pks:
                return ""  # 1.0a: the top_row hook renders the strip
            return ROW_SCRIPT % json.dumps(f"{base}/-/strip/{pks}")
        settings = config(datasette, database, table)
        column = found["column"]
        if columns and column not in columns:
            column = next((c for c in (found["caption"], found["pk"]) if c and c in columns), column)
        cfg = {"gallery": f"{base}/-/gallery", "first": bool(settings.get("image_column_first")),
               "column": column, "after": 1}
        return TABLE_SCRIPT % json.dumps(cfg)

    return inner


def hidden_metadata(datasette, database) -> dict:
    """0.65 metadata hiding the plugin's tables: a table named as a prefix hides every table
    that starts with it (0.65's own rule for FTS shadow tables), so one entry hides them all."""
    if is_datasette_1(datasette):
        return {}
    names = [database] if database else list(datasette.databases)
    return {"databases": {name: {"tables": {INTERNAL_PREFIX: {"hidden": True}}}
                          for name in names}}
