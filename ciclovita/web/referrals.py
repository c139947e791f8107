"""Referrals: the landing page of a referral code.

``GET /r/{code}`` counts a visit on the referral (``visits``, ``last_visited_at``; the
visitor is unknown, so nothing else is recorded) and shows a small welcome page with the
referrer's first name and the code to use. ``HEAD`` requests (link checkers) are not counted.
An unknown code answers 404 and counts nothing.

Converting codes used in orders is ``ciclovita.referrals.convert_referrals``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select, update
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ciclovita.db.models import Customer, Referral
from ciclovita.web.pages import WebContext, context_of, negotiate_locale

CODE_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


@dataclass(frozen=True)
class Landing:
    code: str
    referrer_name: str


def record_visit(connection: Connection, code: str, at: datetime, *, count: bool) -> Landing | None:
    """The referral of ``code`` (exact, else upper-cased), with one more visit if ``count``."""
    if not CODE_PATTERN.match(code):
        return None
    candidates = sorted({code, code.upper()})
    row = connection.execute(
        select(Referral.id, Referral.code, Customer.first_name)
        .join(Customer, Customer.id == Referral.referrer_id)
        .where(Referral.code.in_(candidates))
        .order_by((Referral.code == code).desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    if count:
        connection.execute(
            update(Referral)
            .where(Referral.id == row.id)
            .values(visits=Referral.visits + 1, last_visited_at=at)
        )
    return Landing(row.code, row.first_name or "")


def _visit(web: WebContext, code: str, count: bool) -> Landing | None:
    with web.engine.begin() as connection:
        return record_visit(connection, code, web.now(), count=count)


async def landing(request: Request) -> Response:
    """The welcome page of a referral code; counts the visit."""
    web = context_of(request)
    locale = negotiate_locale(request.headers.get("accept-language"))
    code = request.path_params["code"]
    found = await run_in_threadpool(_visit, web, code, request.method == "GET")
    if found is None:
        return web.pages.error("unknown_code", locale, 404)
    return web.pages.render("referral", locale, code=found.code, referrer_name=found.referrer_name)


def routes() -> list[Route]:
    return [Route("/r/{code}", landing, methods=["GET"], name="referral")]
