"""The report's pages from templates: the HTML, CSS and JavaScript shipped in this folder.

    page.html      the one page shell (blocks title, style, body, script)
    report.html    report/index.html; report.css, report.js (marks each player loaded or missing)
    listen.html    report/listen.html, the listening test; listen.css, listen.js (the session draw and the test)

Rendered by one jinja2 environment that escapes every value (`autoescape`) and refuses an undefined
one (`StrictUndefined`: a misspelt name is an error, not an empty string). The CSS and JavaScript are
included verbatim into the pages (they hold no template syntax), so each page stays one file that
opens from file:// with no server.
"""

from __future__ import annotations

import json

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup


def embedded_json(obj) -> str:
    """`obj` as JSON that is safe as the text of a <script> element: `<`, `>` and `&` (which can only
    occur inside strings) as \\u escapes, so no string can close the element or start a comment; with
    `ensure_ascii`, U+2028 and U+2029 are \\u escapes too."""
    text = json.dumps(obj, ensure_ascii=True)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def script_json(obj) -> Markup:
    """The template filter `script_json`: `embedded_json`, marked safe (HTML-escaping it again would
    turn its quotes into entities, which a <script> element does not decode)."""
    return Markup(embedded_json(obj))


ENV = Environment(loader=PackageLoader("b2m.evaluation", "templates"), autoescape=True, undefined=StrictUndefined,
                  trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
ENV.filters["script_json"] = script_json


def render(name: str, **context) -> str:
    """The template `name` of this folder rendered with `context`."""
    return ENV.get_template(name).render(**context)
