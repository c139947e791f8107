"""Unsubscribe and email preferences: signed per-customer links, consents per topic.

``/u/{token}`` is the address of the ``List-Unsubscribe`` header and of the footer link:

* ``POST`` with ``List-Unsubscribe=One-Click`` (RFC 8058: what a mail client sends when the
  person presses its unsubscribe button, and what the confirm page's button sends) withdraws
  the consent for the token's topic at once;
* ``GET`` only shows a confirm page: link scanners that pre-fetch every URL of a message
  change nothing.

``/preferences/{token}`` shows one checkbox per consent topic (marketing, surveys, newsletter)
and saves the person's choice on ``POST``. Pages speak the customer's language (it or en).

Both write ``consents`` (one row per customer and topic, with source and time), which the
planner and the late guard honour (``ciclovita.planning.eligibility``). A forged, altered or
wrong-purpose token changes nothing and answers 403 with a page saying so; a valid token for a
customer that no longer exists answers 404.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ciclovita.db.models import Consent, Customer, table_of
from ciclovita.links import BadSignature, LinkBuilder, verify
from ciclovita.vocabulary import ConsentTopic, values
from ciclovita.web.pages import (
    BodyTooLarge,
    WebContext,
    context_of,
    first,
    locale_of,
    negotiate_locale,
    read_form,
)

ONE_CLICK_FIELD = "List-Unsubscribe"
ONE_CLICK_VALUE = "One-Click"
SOURCE_UNSUBSCRIBE = "unsubscribe"
SOURCE_PREFERENCES = "preferences_page"


@dataclass(frozen=True)
class Person:
    """The customer a signed link belongs to, as the pages need them."""

    id: int
    first_name: str
    locale: str


def load_person(connection: Connection, customer_id: int) -> Person | None:
    row = connection.execute(
        select(Customer.id, Customer.first_name, Customer.locale).where(Customer.id == customer_id)
    ).first()
    if row is None:
        return None
    return Person(int(row.id), row.first_name or "", locale_of(row.locale))


def consents_of(connection: Connection, customer_id: int) -> dict[str, bool]:
    """The customer's recorded answer per topic (topics never answered are absent)."""
    return {
        topic: bool(granted)
        for topic, granted in connection.execute(
            select(Consent.topic, Consent.granted).where(Consent.customer_id == customer_id)
        )
    }


def record_consents(
    connection: Connection,
    customer_id: int,
    choices: dict[str, bool],
    source: str,
    at: datetime,
    *,
    only_withdraw: bool = False,
) -> None:
    """Upsert the consent of each topic in ``choices``; one statement.

    With ``only_withdraw`` an existing row is changed only while it is granted, so repeating
    an unsubscribe keeps the time of the first one.
    """
    if not choices:
        return
    table = table_of(Consent)
    dialect: Any = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table)
    statement = statement.on_conflict_do_update(
        index_elements=["customer_id", "topic"],
        set_={
            "granted": statement.excluded.granted,
            "source": statement.excluded.source,
            "recorded_at": statement.excluded.recorded_at,
        },
        where=table.c.granted.is_(True) if only_withdraw else None,
    )
    connection.execute(
        statement,
        [
            {
                "customer_id": customer_id,
                "topic": topic,
                "granted": granted,
                "source": source[:64],
                "recorded_at": at,
            }
            for topic, granted in sorted(choices.items())
        ],
    )


def _customer_id(payload: dict[str, Any]) -> int | None:
    value = payload.get("c")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _unsubscribe_view(web: WebContext, customer_id: int) -> tuple[Person | None, dict[str, bool]]:
    with web.engine.connect() as connection:
        person = load_person(connection, customer_id)
        return person, consents_of(connection, customer_id) if person else {}


def _withdraw(web: WebContext, customer_id: int, topic: str, source: str) -> Person | None:
    with web.engine.begin() as connection:
        person = load_person(connection, customer_id)
        if person is not None:
            record_consents(
                connection, customer_id, {topic: False}, source, web.now(), only_withdraw=True
            )
        return person


async def unsubscribe(request: Request) -> Response:
    """``GET``: confirm page. ``POST`` with ``List-Unsubscribe=One-Click``: unsubscribe."""
    web = context_of(request)
    visitor = negotiate_locale(request.headers.get("accept-language"))
    try:
        payload = verify(request.path_params["token"], web.secret, "unsub")
    except BadSignature:
        return web.pages.error("forged", visitor, 403)
    customer_id, topic, uid = _customer_id(payload), payload.get("t"), payload.get("m")
    if customer_id is None or topic not in values(ConsentTopic):
        return web.pages.error("bad_request", visitor, 400)
    preferences_url = LinkBuilder("", web.secret).preferences(customer_id)  # same host
    if request.method == "POST":
        try:
            form = await read_form(request)
        except BodyTooLarge:
            return web.pages.error("too_large", visitor, 413)
        if first(form, ONE_CLICK_FIELD) != ONE_CLICK_VALUE:
            return web.pages.error("bad_request", visitor, 400)
        source = f"{SOURCE_UNSUBSCRIBE}:{uid}" if isinstance(uid, str) else SOURCE_UNSUBSCRIBE
        person = await run_in_threadpool(_withdraw, web, customer_id, str(topic), source)
        if person is None:
            return web.pages.error("not_found", visitor, 404)
        return web.pages.render(
            "unsubscribed", person.locale, topic=topic, preferences_url=preferences_url
        )
    person, consents = await run_in_threadpool(_unsubscribe_view, web, customer_id)
    if person is None:
        return web.pages.error("not_found", visitor, 404)
    return web.pages.render(
        "unsubscribe",
        person.locale,
        topic=topic,
        first_name=person.first_name,
        already=consents.get(str(topic)) is False,
        preferences_url=preferences_url,
    )


def _save_preferences(
    web: WebContext, customer_id: int, wanted: set[str]
) -> tuple[Person | None, dict[str, bool]]:
    with web.engine.begin() as connection:
        person = load_person(connection, customer_id)
        if person is None:
            return None, {}
        current = consents_of(connection, customer_id)
        changes = {
            topic: topic in wanted
            for topic in values(ConsentTopic)
            if current.get(topic) is not (topic in wanted)
        }
        record_consents(connection, customer_id, changes, SOURCE_PREFERENCES, web.now())
        return person, {**current, **changes}


async def preferences(request: Request) -> Response:
    """``GET``: the topics and their state. ``POST``: save the checked topics."""
    web = context_of(request)
    visitor = negotiate_locale(request.headers.get("accept-language"))
    try:
        payload = verify(request.path_params["token"], web.secret, "prefs")
    except BadSignature:
        return web.pages.error("forged", visitor, 403)
    customer_id = _customer_id(payload)
    if customer_id is None:
        return web.pages.error("bad_request", visitor, 400)
    saved = request.method == "POST"
    if saved:
        try:
            form = await read_form(request)
        except BodyTooLarge:
            return web.pages.error("too_large", visitor, 413)
        wanted = {t for t in form.get("topic", []) if t in values(ConsentTopic)}
        person, consents = await run_in_threadpool(_save_preferences, web, customer_id, wanted)
    else:
        person, consents = await run_in_threadpool(_unsubscribe_view, web, customer_id)
    if person is None:
        return web.pages.error("not_found", visitor, 404)
    topics = [{"name": t, "granted": consents.get(t) is True} for t in values(ConsentTopic)]
    return web.pages.render(
        "preferences", person.locale, first_name=person.first_name, topics=topics, saved=saved
    )


def routes() -> list[Route]:
    return [
        Route("/u/{token}", unsubscribe, methods=["GET", "POST"], name="unsubscribe"),
        Route("/preferences/{token}", preferences, methods=["GET", "POST"], name="preferences"),
    ]
