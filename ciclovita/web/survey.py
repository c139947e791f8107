"""Survey answers from the score links of a survey email (``/survey/{token}``).

The token is signed and carries the customer, the message uid and the score (0-10); the
score cannot be changed without breaking the signature.

Link scanners (corporate mail filters, some webmail) fetch every link of a message before
the person sees it. A survey email has eleven score links, so recording on ``GET`` — even
idempotently, keyed by the message — would record whichever score the scanner fetched first
(or last): an answer nobody gave. So:

* ``GET`` never writes. It shows the chosen score, an optional comment box and a "Send"
  button; if this very answer is already recorded it shows the thank-you page instead.
* ``POST`` records the answer: one ``survey_responses`` row per message (unique key
  ``message_id``). Posting again for the same message keeps one row: the latest score wins
  (the person picked another number in the email) and a comment, once given, is kept unless
  a new one replaces it. The customer's current NPS (``customer_scores.nps``) is refreshed at
  once; the next recompute uses the same answer (promoters of a loyal customer → advocate).

The thank-you page offers the comment box again when no comment was given yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, case, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ciclovita.db.models import CustomerScore, Message, SurveyResponse, table_of
from ciclovita.links import BadSignature, verify
from ciclovita.web.pages import (
    BodyTooLarge,
    WebContext,
    context_of,
    first,
    negotiate_locale,
    read_form,
)
from ciclovita.web.preferences import Person, load_person

MAX_COMMENT = 2_000
SURVEY_KIND = "nps"


@dataclass(frozen=True)
class SurveyLink:
    """The verified content of a survey token."""

    customer_id: int
    message_uid: str
    score: int


@dataclass(frozen=True)
class Answer:
    score: int
    comment: str | None


def parse_token(token: str, secret: str) -> SurveyLink | None:
    """The survey link in ``token`` (BadSignature if forged; None if its content is bad)."""
    payload = verify(token, secret, "survey")
    customer, uid, score = payload.get("c"), payload.get("m"), payload.get("s")
    if (
        not isinstance(customer, int)
        or isinstance(customer, bool)
        or not isinstance(uid, str)
        or not isinstance(score, int)
        or isinstance(score, bool)
        or not 0 <= score <= 10
    ):
        return None
    return SurveyLink(customer, uid, score)


def _message_id(connection: Connection, link: SurveyLink) -> int | None:
    """The outbox message of the link, if it was sent to this customer."""
    row = connection.execute(
        select(Message.id).where(
            Message.uid == link.message_uid, Message.customer_id == link.customer_id
        )
    ).first()
    return int(row[0]) if row else None


def _existing(connection: Connection, message_id: int) -> Answer | None:
    row = connection.execute(
        select(SurveyResponse.score, SurveyResponse.comment).where(
            SurveyResponse.message_id == message_id
        )
    ).first()
    return Answer(int(row.score), row.comment) if row else None


def record_answer(
    connection: Connection,
    link: SurveyLink,
    message_id: int,
    comment: str | None,
    at: Any,
) -> Answer:
    """Upsert the answer for the message and refresh the customer's current NPS."""
    table = table_of(SurveyResponse)
    dialect: Any = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table).values(
        customer_id=link.customer_id,
        message_id=message_id,
        kind=SURVEY_KIND,
        score=link.score,
        comment=comment,
        answered_at=at,
    )
    statement = statement.on_conflict_do_update(
        index_elements=["message_id"],
        set_={
            "score": statement.excluded.score,
            "comment": func.coalesce(statement.excluded.comment, table.c.comment),
            "answered_at": case(
                (table.c.score != statement.excluded.score, statement.excluded.answered_at),
                else_=table.c.answered_at,
            ),
        },
    ).returning(table.c.score, table.c.comment)
    row = connection.execute(statement).one()
    latest = (
        select(SurveyResponse.score)
        .where(SurveyResponse.customer_id == link.customer_id, SurveyResponse.kind == SURVEY_KIND)
        .order_by(SurveyResponse.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    connection.execute(
        update(CustomerScore)
        .where(CustomerScore.customer_id == link.customer_id)
        .values(nps=latest)
    )
    return Answer(int(row.score), row.comment)


def _view(web: WebContext, link: SurveyLink) -> tuple[Person | None, Answer | None]:
    with web.engine.connect() as connection:
        person = load_person(connection, link.customer_id)
        message_id = _message_id(connection, link) if person else None
        if person is None or message_id is None:
            return None, None
        return person, _existing(connection, message_id)


def _record(
    web: WebContext, link: SurveyLink, comment: str | None
) -> tuple[Person | None, Answer | None]:
    with web.engine.begin() as connection:
        person = load_person(connection, link.customer_id)
        message_id = _message_id(connection, link) if person else None
        if person is None or message_id is None:
            return None, None
        return person, record_answer(connection, link, message_id, comment, web.now())


async def survey(request: Request) -> Response:
    """``GET``: confirm page (never writes). ``POST``: record the answer, thank the person."""
    web = context_of(request)
    visitor = negotiate_locale(request.headers.get("accept-language"))
    try:
        link = parse_token(request.path_params["token"], web.secret)
    except BadSignature:
        return web.pages.error("forged", visitor, 403)
    if link is None:
        return web.pages.error("bad_request", visitor, 400)
    if request.method == "POST":
        try:
            form = await read_form(request)
        except BodyTooLarge:
            return web.pages.error("too_large", visitor, 413)
        comment = (first(form, "comment") or "").replace("\x00", "").strip()[:MAX_COMMENT]
        person, answer = await run_in_threadpool(_record, web, link, comment or None)
    else:
        person, answer = await run_in_threadpool(_view, web, link)
        if person is not None and (answer is None or answer.score != link.score):
            return web.pages.render(
                "survey",
                person.locale,
                first_name=person.first_name,
                score=link.score,
                max_comment=MAX_COMMENT,
            )
    if person is None or answer is None:
        return web.pages.error("not_found", visitor, 404)
    return web.pages.render(
        "survey_thanks",
        person.locale,
        score=answer.score,
        comment=answer.comment,
        max_comment=MAX_COMMENT,
    )


def routes() -> list[Route]:
    return [Route("/survey/{token}", survey, methods=["GET", "POST"], name="survey")]
