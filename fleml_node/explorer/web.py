"""The explorer's web app (Flask): HTML pages and their JSON twins under ``/api/``.

=================================  ==========================================
page                               JSON twin
=================================  ==========================================
``/``  consortium, members (paged) ``/api/consortium``
``/rounds``  rounds (paged)        ``/api/rounds``
``/rounds/N``  a round             ``/api/rounds/N``
``/members/0x...``  a member       ``/api/members/0x...``
``POST /rounds/N/audit``           ``POST /api/rounds/N/audit``
``/rounds/N/download/WHAT``        (the bytes: base, result or report)
=================================  ==========================================

Lists take ``?page=`` (and ``?per_page=``, at most 100). Pages carry a strict
Content-Security-Policy (no scripts at all, styles and images only from the app), so even a
string that escaped escaping could not run.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, abort, jsonify, render_template, request, url_for
from jinja2 import DictLoader
from werkzeug.exceptions import HTTPException

from fleml_node.explorer.chart import history_chart, round_chart
from fleml_node.explorer.data import AuditBusy, Explorer
from fleml_node.explorer.templates import STYLE, TEMPLATES

log = logging.getLogger(__name__)

MAX_PER_PAGE = 100
CSP = ("default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def create_app(explorer: Explorer) -> Flask:
    """The Flask app serving `explorer`'s pages."""
    app = Flask("fleml_node.explorer")
    app.jinja_loader = DictLoader(TEMPLATES)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    chain_id = explorer.c.deployment.chain_id

    def page_args(default: int) -> dict[str, int]:
        try:
            page = int(request.args.get("page", 1))
            per_page = int(request.args.get("per_page", default))
        except ValueError:
            abort(400, "page and per_page must be integers")
        return {"page": max(1, page), "per_page": min(max(1, per_page), MAX_PER_PAGE)}

    def render(template: str, data: dict[str, Any], api: str, **extra: Any) -> str:
        return render_template(template, d=data, chain_id=chain_id, api_url=api, **extra)

    def api_path() -> str:
        return "/api" + (request.path if request.path != "/" else "/consortium") + (
            "?" + request.query_string.decode() if request.query_string else "")

    def find_round(round_id: int) -> dict[str, Any]:
        try:
            return explorer.round(round_id)
        except KeyError:
            abort(404, f"round {round_id} does not exist")

    def find_member(address: str, **paging: int) -> dict[str, Any]:
        try:
            return explorer.member(address, **paging)
        except KeyError:
            abort(404, f"{address} was never admitted as a member")

    def run_audit(round_id: int) -> dict[str, Any]:
        origin = request.headers.get("Origin")
        if origin and urlsplit(origin).netloc != request.host:
            abort(403, "audits are started from the explorer's own pages")
        info = find_round(round_id)
        if info["status"] not in ("finalized", "rejected"):
            abort(409, f"round {round_id} is {info['status']}: only a finalized round can be "
                       f"audited")
        try:
            return explorer.audit(round_id)
        except AuditBusy as exc:
            abort(429, str(exc))

    # -- HTML ----------------------------------------------------------------------------
    @app.get("/")
    def consortium_page() -> str:
        return render("consortium.html", explorer.consortium(**page_args(50)), api_path())

    @app.get("/rounds")
    def rounds_page() -> str:
        return render("rounds.html", explorer.rounds(**page_args(20)), api_path())

    @app.get("/rounds/<int:round_id>")
    def round_page(round_id: int) -> str:
        data = find_round(round_id)
        return render("round.html", data, api_path(),
                      chart=round_chart(data["submissions"], data.get("score_name")))

    @app.get("/members/<address>")
    def member_page(address: str) -> str:
        data = find_member(address, **page_args(20))
        return render("member.html", data, api_path(), chart=history_chart(data["history"]))

    @app.post("/rounds/<int:round_id>/audit")
    def audit_page(round_id: int) -> str:
        return render("audit.html", run_audit(round_id), f"/api/rounds/{round_id}/audit")

    @app.get("/rounds/<int:round_id>/download/<what>")
    def download(round_id: int, what: str) -> Response:
        find_round(round_id)
        try:
            blob, name = explorer.download(round_id, what)
        except KeyError:
            abort(404, f"round {round_id} has no {what}")
        kind = "application/json" if name.endswith(".json") else "application/octet-stream"
        return Response(blob, mimetype=kind,
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @app.get("/style.css")
    def style() -> Response:
        return Response(STYLE, mimetype="text/css",
                        headers={"Cache-Control": "public, max-age=3600"})

    # -- JSON ----------------------------------------------------------------------------
    @app.get("/api/consortium")
    def api_consortium() -> Response:
        return jsonify(explorer.consortium(**page_args(50)))

    @app.get("/api/rounds")
    def api_rounds() -> Response:
        return jsonify(explorer.rounds(**page_args(20)))

    @app.get("/api/rounds/<int:round_id>")
    def api_round(round_id: int) -> Response:
        return jsonify(find_round(round_id))

    @app.get("/api/members/<address>")
    def api_member(address: str) -> Response:
        return jsonify(find_member(address, **page_args(20)))

    @app.post("/api/rounds/<int:round_id>/audit")
    def api_audit(round_id: int) -> Response:
        return jsonify(run_audit(round_id))

    # -- errors and headers --------------------------------------------------------------
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        if request.path.startswith("/api/"):
            return jsonify({"error": exc.description, "status": exc.code}), exc.code
        return render_template("error.html", code=exc.code, message=exc.description,
                               chain_id=chain_id, api_url=url_for("api_consortium")), exc.code

    @app.errorhandler(Exception)
    def failure(exc: Exception) -> Any:
        # the chain RPC or the IPFS API did not answer, or something unexpected: say so, 503
        log.exception("request %s failed", request.path)
        message = f"{type(exc).__name__}: {exc}"
        if request.path.startswith("/api/"):
            return jsonify({"error": message, "status": 503}), 503
        return render_template("error.html", code=503, message=message, chain_id=chain_id,
                               api_url=url_for("api_consortium")), 503

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    return app


def to_json(data: Any) -> str:
    """What the JSON twins return, for the CLI."""
    return json.dumps(data, indent=2)


def serve(app: Flask, host: str, port: int) -> None:
    """Serve `app` with Werkzeug's threaded server until interrupted."""
    from werkzeug.serving import make_server

    server = make_server(host, port, app, threaded=True)
    log.warning("FLEML explorer on http://%s:%d/ (read-only; Ctrl-C to stop)",
                host if ":" not in host else f"[{host}]", server.server_port)
    try:
        server.serve_forever()
    finally:
        server.server_close()
