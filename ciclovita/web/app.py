"""The ASGI app of ``ciclovita serve-web``: the SendGrid webhook and the pages people open.

Routes:

=========================  ==========  =========================================
``/webhooks/sendgrid``     POST        signed Event Webhook (``ciclovita.web.webhook``)
``/u/{token}``             GET, POST   unsubscribe, RFC 8058 one-click on POST
``/preferences/{token}``   GET, POST   consent topics (``ciclovita.web.preferences``)
``/survey/{token}``        GET, POST   NPS answer (``ciclovita.web.survey``)
``/r/{code}``              GET         referral landing (``ciclovita.web.referrals``)
``/healthz``               GET         the database answers
=========================  ==========  =========================================

Handlers are async and run their database work on Starlette's thread pool (the engine is the
ordinary synchronous one), one short transaction per request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ciclovita.db.engine import get_engine
from ciclovita.settings import Settings
from ciclovita.web import preferences, referrals, survey, webhook
from ciclovita.web.pages import (
    Pages,
    WebContext,
    context_of,
    json_response,
    negotiate_locale,
    now_utc,
)

log = logging.getLogger(__name__)


def _database_answers(engine: Engine) -> bool:
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return False
    return True


async def healthz(request: Request) -> Response:
    ok = await run_in_threadpool(_database_answers, context_of(request).engine)
    return json_response({"ok": ok}, 200 if ok else 503)


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith(("/webhooks/", "/healthz"))


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if _wants_json(request):
        return json_response({"error": getattr(exc, "detail", "error")}, status)
    problem = {404: "not_found", 405: "bad_request"}.get(status, "server_error")
    locale = negotiate_locale(request.headers.get("accept-language"))
    return context_of(request).pages.error(problem, locale, status)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    if _wants_json(request):
        return json_response({"error": "internal error"}, 500)
    locale = negotiate_locale(request.headers.get("accept-language"))
    return context_of(request).pages.error("server_error", locale, 500)


def create_app(
    settings: Settings,
    *,
    engine: Engine | None = None,
    clock: Callable[[], datetime] = now_utc,
    webhook_tolerance: timedelta | None = None,
) -> Starlette:
    """The web app for ``settings`` (its database unless ``engine`` is given).

    A malformed webhook public key fails here, at start-up, with a ConfigurationError. With
    no key configured the webhook answers 503 (SendGrid keeps retrying) and the pages work.
    """
    key = settings.sendgrid_webhook_public_key
    tolerance = webhook_tolerance or timedelta(seconds=settings.sendgrid_webhook_max_age_seconds)
    verifier = webhook.SignatureVerifier(key, tolerance) if key else None
    if verifier is None:
        log.warning(
            "CICLOVITA_SENDGRID_WEBHOOK_PUBLIC_KEY is not set: /webhooks/sendgrid answers 503"
        )
    web = WebContext(
        settings=settings,
        engine=engine if engine is not None else get_engine(settings.database_url),
        pages=Pages(settings.from_name),
        clock=clock,
    )
    routes = [
        Route("/healthz", healthz, methods=["GET"], name="healthz"),
        *webhook.routes(verifier),
        *preferences.routes(),
        *survey.routes(),
        *referrals.routes(),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
    )
    app.state.web = web
    return app
