"""Rendering: the sandboxed Jinja2 environment, locale-aware formatting, message context."""
