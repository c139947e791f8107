"""Rendering: from an outbox row to an email — the sandboxed Jinja2 environment, locale-aware
formatting, the message context, and ``MessageBuilder`` (``builder``), which renders each
message once into an ``OutgoingEmail`` (``outgoing``)."""
