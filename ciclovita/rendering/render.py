"""Rendering one message: subject, HTML (CSS inlined for email clients) and plain text.

Templates live in ``templates/<template>/<locale>.html`` and ``<locale>.txt`` and extend the
shared layouts in ``templates/_layouts/``. The subject is itself a template, written in the
campaign YAML. Rendering is once per (campaign, recipient); compiled templates are cached.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import css_inline
from jinja2 import Template, TemplateError

from ciclovita.campaigns.spec import Campaign, localized
from ciclovita.errors import RenderError
from ciclovita.rendering.environment import make_environment, text_environment

_SPACES = re.compile(r"\s+")
# a template can fail on its syntax or on the data given to a filter (money on a date, an
# unknown time zone): both fail the one message, never the batch
RENDER_ERRORS: tuple[type[Exception], ...] = (
    TemplateError,
    TypeError,
    ValueError,
    LookupError,
    ArithmeticError,
)


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str


def template_files(template: str, locale: str) -> tuple[str, str]:
    """The HTML and text template names of a template folder in one locale."""
    return f"{template}/{locale}.html", f"{template}/{locale}.txt"


def one_line(text: str) -> str:
    """A header value: no line breaks (no header injection), spaces collapsed."""
    return _SPACES.sub(" ", text).strip()


class Renderer:
    """Renders campaign messages from one templates directory."""

    def __init__(self, templates_dir: Path) -> None:
        self.templates_dir = templates_dir
        self.env = make_environment(templates_dir)
        self.text_env = text_environment()
        self.inliner = css_inline.CSSInliner(keep_style_tags=True)
        self._inline_string = lru_cache(maxsize=512)(self.text_env.from_string)

    def _pick(self, campaign: Campaign, variant: str) -> tuple[str, Any]:
        template, subject = campaign.content.template, campaign.content.subject
        for option in campaign.variants:
            if option.name == variant:
                template = option.template or template
                subject = option.subject or subject
        return template, subject

    def render(
        self, name: str, campaign: Campaign, variant: str, locale: str, context: dict[str, Any]
    ) -> RenderedEmail:
        """Render one message; any template problem is a RenderError naming the template."""
        template, subject_source = self._pick(campaign, variant)
        fallback = campaign.content.fallback_locale
        html_name, text_name = template_files(template, locale)
        customer_id = context.get("customer", {}).get("id")
        current = f"{name}.subject"
        try:
            subject = one_line(
                self._inline_string(localized(subject_source, locale, fallback)).render(context)
            )
            preheader = ""
            if campaign.content.preheader is not None:
                current = f"{name}.preheader"
                preheader = one_line(
                    self._inline_string(
                        localized(campaign.content.preheader, locale, fallback)
                    ).render(context)
                )
            full = {**context, "subject": subject, "preheader": preheader}
            current = html_name
            html = self._template(html_name).render(full)
            current = text_name
            text = self._template(text_name).render(full)
        except RENDER_ERRORS as exc:
            raise RenderError(name, current, customer_id, f"{type(exc).__name__}: {exc}") from exc
        try:
            html = self.inliner.inline(html)
        except ValueError as exc:
            raise RenderError(name, html_name, customer_id, f"CSS inlining failed: {exc}") from exc
        return RenderedEmail(subject=subject, html=html, text=text)

    def _template(self, name: str) -> Template:
        return self.env.get_template(name)
