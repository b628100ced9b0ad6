"""The small web site every clover-server serves, written into its pod's file system.

Like the original server image, the index page is the upload form (six file fields, posting to
``upload_path_config``) and ``upload_test.html`` posts to ``upload_path_test``; both are
rewritten on each configuration change. The other pages are only written when missing, so a
user's files survive restarts.
"""

from __future__ import annotations

import json
from pathlib import Path

UPLOAD_FIELDS = ("file1", "file2", "file3", "file4", "file5", "file6")

_STYLE = """body { font-family: sans-serif; margin: 2em auto; max-width: 46em; color: #223; }
header { border-bottom: 3px solid #2a7; margin-bottom: 1em; }
nav a { margin-right: 1em; }
form { border: 1px solid #ccd; padding: 1em; }
footer { margin-top: 2em; font-size: small; color: #667; }
"""

_LOGO = """<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" viewBox="0 0 64 64">
<g fill="#2a7"><circle cx="22" cy="22" r="14"/><circle cx="42" cy="22" r="14"/>
<circle cx="22" cy="42" r="14"/><circle cx="42" cy="42" r="14"/></g>
<rect x="30" y="40" width="4" height="22" fill="#174"/></svg>
"""


def _page(title: str, server_name: str, body: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>{title}</title><link rel="stylesheet" href="/static/style.css"></head>
<body>
<header><img src="/static/clover.svg" alt="" width="32" height="32"> <strong>Clover sample site</strong>
<nav><a href="/">Home</a><a href="/about.html">About</a><a href="/catalog/">Catalog</a>
<a href="/upload_test.html">Upload test</a></nav></header>
{body}
<footer>Served by {server_name}</footer>
</body>
</html>
"""


def upload_form(action: str, title: str, server_name: str) -> str:
    fields = "\n".join(f'<p><label>{f}: <input type="file" name="{f}"></label></p>' for f in UPLOAD_FIELDS)
    body = f"""<h1>{title}</h1>
<form action="{action}" method="post" enctype="multipart/form-data">
{fields}
<p><label>Description: <input type="text" name="description"></label></p>
<p><input type="submit" name="submit" value="Upload"></p>
</form>"""
    return _page(title, server_name, body)


def _catalog() -> list[dict[str, object]]:
    names = ["clover", "shamrock", "trefoil", "medick", "sorrel", "vetch", "lucerne", "sainfoin"]
    return [
        {"id": i + 1, "name": n, "price_cents": 199 + 37 * i, "in_stock": i % 3 != 0, "tags": ["seed", n[:3]]}
        for i, n in enumerate(names)
    ]


def write_site(root: Path, index: str, upload_config: str, upload_test: str, server_name: str) -> None:
    """Write the site under ``root`` (the pod-side site_root)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / index).write_text(upload_form(upload_config, "Upload files", server_name))
    (root / "upload_test.html").write_text(upload_form(upload_test, "Upload test", server_name))
    static = {
        "about.html": _page(
            "About",
            server_name,
            "<h1>About</h1><p>This site is part of Clover's sample service chain: "
            "proxy-access-control, http-lb and clover-server pods, watched by snort-ids.</p>",
        ),
        "static/style.css": _STYLE,
        "static/clover.svg": _LOGO,
        "catalog/index.html": _page(
            "Catalog",
            server_name,
            "<h1>Catalog</h1><ul>"
            + "".join(f"<li>{item['name']}</li>" for item in _catalog())
            + '</ul><p><a href="/catalog/items.json">as JSON</a></p>',
        ),
        "catalog/items.json": json.dumps(_catalog(), indent=2) + "\n",
    }
    for rel, text in static.items():
        path = root / rel
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
