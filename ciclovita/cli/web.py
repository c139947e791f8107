"""``ciclovita serve-web`` (the webhook and the pages people open) and
``ciclovita convert-referrals`` (credit referral codes used in imported orders)."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from ciclovita.cli.app import app, console, echo_json, handles_errors, parse_as_of, runtime


@app.command("serve-web")
@handles_errors
def serve_web(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.", min=0, max=65535)] = 8000,
    access_log: Annotated[
        bool,
        typer.Option(
            "--access-log/--no-access-log",
            help="Log every request line. Off by default: paths carry signed link tokens.",
        ),
    ] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the SendGrid event webhook, unsubscribe, preference, survey and referral pages."""
    import uvicorn

    from ciclovita.web.app import create_app

    rt = runtime()
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    web_app = create_app(rt.settings, engine=rt.engine)
    console.print(
        f"ciclovita web on http://{host}:{port} (links point to {rt.settings.public_base_url})",
        highlight=False,
    )
    uvicorn.run(
        web_app,
        host=host,
        port=port,
        access_log=access_log,
        log_level=log_level,
        proxy_headers=True,
        server_header=False,
    )


@app.command("convert-referrals")
@handles_errors
def convert_referrals_command(
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Only orders placed up to this time.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Convert open referrals whose code was used in a completed order."""
    from ciclovita.referrals import convert_referrals

    rt = runtime()
    with rt.engine.begin() as connection:
        report = convert_referrals(connection, parse_as_of(as_of))
    if as_json:
        echo_json(report.as_dict())
    else:
        console.print(f"{report.converted} referral(s) converted")
