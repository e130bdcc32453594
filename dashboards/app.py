"""The Dash app over an artifacts folder: five pages, every view's state in the URL query string.

``/`` Overview, ``/layers``, ``/attention``, ``/probes``, ``/verdict``; e.g.
``/attention?exp=smollm2-135m/gptq3&variant=idp&layer=12&head=-1&probe=40`` reopens exactly that view.
The app only reads files under the artifacts root it was created with (see ``dashboards.data``).

Live: a clock (``tick``, every :data:`REFRESH_MS`) rebuilds the current page when the store changes (an
artifact lands, a stage of a running experiment starts or ends: :func:`dashboards.data.store_signature`), so
pages fill in without a reload; the Overview's stage table follows the clock itself. A page whose inputs do
not exist yet says which stage produces them.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

from dash import ALL, Dash, Input, Output, State, ctx, dcc, html, no_update
from waitress.server import BaseWSGIServer, create_server

from dashboards import data
from dashboards.pages import attention, layers, overview, probes, verdict
from dashboards.pages.common import notice, parse_query, waiting
from probe.errors import ProbeError

PAGES = {m.PATH: m for m in (overview, layers, attention, probes, verdict)}
STRUCTURAL = ("exp",)  # query keys whose change rebuilds the page (the rest only drive figures)
REFRESH_MS = 2000
# what each page shows, by the experiment stage kind that produces it (for "not here yet" notices)
NEEDS = {"/layers": ("capture", "the captures this page compares"),
         "/attention": ("capture", "the captured attention maps"),
         "/probes": ("capture", "the captured probes"),
         "/verdict": ("analyze", "the analysis and its verdict")}


def render(root: Path, pathname: str | None, search: str | None, shown: dict | None) -> tuple:
    """The page for ``pathname``; rebuilt only when the page, the experiment or the store changes."""
    query = parse_query(search)
    key = {"path": pathname or "/", **{k: query.get(k) for k in STRUCTURAL},
           "store": data.store_signature(root)}
    if key == shown:
        return no_update, no_update
    page = PAGES.get(pathname or "/")
    if page is None:
        return notice(f"no page {pathname!r}: pages are {', '.join(PAGES)}", "error"), key
    try:
        return page.layout(root, query), key
    except ProbeError as exc:
        need = NEEDS.get(pathname or "/")
        pending = need is not None and data.stage_for(root, need[0]) is not None
        hint = [waiting(root, need[0], need[1], "")] if pending else []
        return html.Div([html.H2(page.TITLE), *hint, notice(str(exc), "info" if pending else "error")]), key


def nav(pathname: str | None, search: str | None) -> list:
    """Links to every page that carry the current query string, so the selection follows."""
    return [dcc.Link(m.TITLE, href=f"{path}{search or ''}", id=f"nav-{m.TITLE.lower()}",
                     style={"marginRight": "1.2rem", "fontWeight": "bold" if path == (pathname or "/") else "normal"})
            for path, m in PAGES.items()]


def sync(values: list, search: str | None) -> str:
    """Mirror every URL-state control's value in the query string."""
    query = parse_query(search)
    for item, value in zip(ctx.inputs_list[0], values, strict=True):
        if value is None:
            query.pop(item["id"]["key"], None)
        else:
            query[item["id"]["key"]] = str(value)
    new = "?" + urlencode(query, safe="/")
    return new if new != (search or "?") else no_update


def create_app(artifacts_root: str | Path) -> Dash:
    """The dashboard over ``artifacts_root`` (read-only)."""
    root = Path(artifacts_root).resolve()
    if not root.is_dir():
        raise ProbeError(f"artifacts folder {root} does not exist: pass --artifacts DIR (the folder `probe capture` "
                         f"and `probe analyze` write to)")
    app = Dash(__name__, title="probe dashboard", suppress_callback_exceptions=True)
    app.layout = html.Div([
        dcc.Location(id="url", refresh=False),
        dcc.Store(id="page-key"),
        dcc.Interval(id="tick", interval=REFRESH_MS),
        html.Div([html.Span("probe", style={"fontWeight": "bold", "marginRight": "2rem"}), html.Span(id="nav")],
                 style={"padding": "0.7rem 1rem", "borderBottom": "1px solid #ddd", "fontFamily": "sans-serif"}),
        html.Div(id="page", style={"padding": "0 1rem 2rem", "fontFamily": "sans-serif"}),
    ])
    app.callback(Output("page", "children"), Output("page-key", "data"), Input("url", "pathname"),
                 Input("url", "search"), Input("tick", "n_intervals"), State("page-key", "data"))(
        lambda pathname, search, _tick, shown: render(root, pathname, search, shown))
    app.callback(Output("nav", "children"), Input("url", "pathname"), Input("url", "search"))(nav)
    app.callback(Output("url", "search"), Input({"type": "q", "page": ALL, "key": ALL}, "value"),
                 State("url", "search"), prevent_initial_call=True)(sync)
    for page in PAGES.values():
        page.register(app, root)
    return app


def make_server(artifacts_root: str | Path, host: str = "127.0.0.1", port: int = 8050,
                threads: int = 8) -> BaseWSGIServer:
    """The dashboard on waitress, a production WSGI server, bound but not yet serving (``port`` 0: any free one;
    the bound port is ``server.effective_port``). ``run()`` serves, ``close()`` unbinds."""
    return create_server(create_app(artifacts_root).server, host=host, port=port, threads=threads,
                         ident="probe dashboard")


def serve(artifacts_root: str | Path, host: str = "127.0.0.1", port: int = 8050, debug: bool = False) -> None:
    """Serve the dashboard until Ctrl-C (blocking): waitress, or Dash's development server with ``debug``
    (reloader and tracebacks in the page, local use only)."""
    if debug:
        create_app(artifacts_root).run(host=host, port=port, debug=True)
        return
    server = make_server(artifacts_root, host, port)
    shown = f"[{host}]" if ":" in host else host
    print(f"dashboard: http://{shown}:{server.effective_port}/ (Ctrl-C to stop)", flush=True)
    try:
        server.run()
    finally:
        server.close()
