"""What every web handler shares: the context (settings, engine, clock), HTML pages, forms.

Pages are Jinja templates under ``ciclovita/web/templates/`` (``layout.html``, then one
folder per locale, ``it/`` and ``en/``), rendered by a sandboxed environment with
autoescaping always on: a customer's name, a comment or a referral code is text, never markup.
Every response carries headers that keep the signed link private (no referrer, no caching)
and forbid scripts, frames and foreign form targets.

Forms are read here too, with the standard library only: RFC 8058 one-click unsubscribes
arrive as ``application/x-www-form-urlencoded`` or ``multipart/form-data``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from sqlalchemy import Engine
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse

from ciclovita.settings import Settings
from ciclovita.vocabulary import FALLBACK_LOCALE, Locale, values

log = logging.getLogger(__name__)

TEMPLATES_DIR: Final = Path(__file__).resolve().parent / "templates"
LOCALES: Final = values(Locale)
MAX_FORM_BYTES: Final = 64 * 1024

SECURITY_HEADERS: Final[Mapping[str, str]] = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "X-Robots-Tag": "noindex, nofollow",
}


class BodyTooLarge(Exception):  # noqa: N818 - says what the body is
    """The request body is over the limit for its route (answered 413)."""


def now_utc() -> datetime:
    return datetime.now(UTC)


def locale_of(value: str | None) -> str:
    """One of the page locales for a customer's locale (``it_IT`` → ``it``)."""
    base = (value or "").replace("_", "-").split("-", 1)[0].lower()
    return base if base in LOCALES else FALLBACK_LOCALE


def negotiate_locale(accept_language: str | None) -> str:
    """The page locale a visitor's browser prefers (``Accept-Language``), or the default."""
    choices: list[tuple[float, int, str]] = []
    for position, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        base = tag.strip().split("-", 1)[0].lower()
        if base in LOCALES and quality > 0:
            choices.append((-quality, position, base))
    return min(choices)[2] if choices else FALLBACK_LOCALE


class Pages:
    """Renders the web pages, one template per locale, in a sandbox with autoescaping."""

    def __init__(self, brand: str, directory: Path = TEMPLATES_DIR) -> None:
        self.brand = brand
        self.environment = ImmutableSandboxedEnvironment(
            loader=FileSystemLoader(directory),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def html(self, page: str, locale: str, **context: Any) -> str:
        template = self.environment.get_template(f"{locale_of(locale)}/{page}.html")
        return template.render(brand=self.brand, locale=locale_of(locale), **context)

    def render(
        self, page: str, locale: str, *, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        body = self.html(page, locale, **context)
        return HTMLResponse(body, status_code=status_code, headers=dict(SECURITY_HEADERS))

    def error(self, problem: str, locale: str, status_code: int) -> HTMLResponse:
        """A clear page for a link that cannot be used (``problem`` names which case)."""
        return self.render("error", locale, status_code=status_code, problem=problem)


@dataclass
class WebContext:
    """What the handlers of one app share."""

    settings: Settings
    engine: Engine
    pages: Pages
    clock: Callable[[], datetime] = now_utc

    @property
    def secret(self) -> str:
        return self.settings.secret_key.get_secret_value()

    def now(self) -> datetime:
        return self.clock().astimezone(UTC)


def context_of(request: Request) -> WebContext:
    web: WebContext = request.app.state.web
    return web


async def read_body(request: Request, limit: int) -> bytes:
    """The whole request body, or BodyTooLarge past ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"body of {declared} bytes is over the limit of {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


Form = dict[str, list[str]]


def parse_form(content_type: str, body: bytes) -> Form:
    """Fields of a url-encoded or multipart form body (unknown types: no fields)."""
    kind = content_type.split(";", 1)[0].strip().lower()
    form: Form = {}
    if kind == "application/x-www-form-urlencoded":
        text = body.decode("utf-8", "replace")
        for name, value in parse_qsl(text, keep_blank_values=True):
            form.setdefault(name, []).append(value)
    elif kind == "multipart/form-data":
        header = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace")
        message = BytesParser(policy=HTTP).parsebytes(header + body)
        if message.is_multipart():
            for part in message.iter_parts():
                field: Any = part.get_param("name", header="content-disposition")
                if not isinstance(field, str):
                    continue
                payload = part.get_payload(decode=True)
                data = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
                form.setdefault(field, []).append(data)
    return form


async def read_form(request: Request) -> Form:
    body = await read_body(request, MAX_FORM_BYTES)
    return parse_form(request.headers.get("content-type", ""), body)


def first(form: Form, name: str) -> str | None:
    values = form.get(name)
    return values[0] if values else None


def json_response(data: Any, status_code: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status_code, headers={"Cache-Control": "no-store"})
