"""``ciclovita value fit``: BG/NBD and Gamma-Gamma on any transaction log."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ciclovita.cli.app import app, console, echo_json, handles_errors

value_app = typer.Typer(help="Customer value: lifetime value models.", no_args_is_help=True)
app.add_typer(value_app, name="value")


class TimeUnit(StrEnum):
    days = "days"
    weeks = "weeks"


@value_app.command("fit")
@handles_errors
def fit(
    transactions: Annotated[Path, typer.Option("--transactions", help="CSV transaction log.")],
    customer_col: Annotated[str, typer.Option("--customer-col")] = "customer_id",
    date_col: Annotated[str, typer.Option("--date-col")] = "date",
    amount_col: Annotated[str, typer.Option("--amount-col")] = "amount",
    observation_end: Annotated[
        str | None,
        typer.Option(
            "--observation-end", help="End of the observation period (default: last date)."
        ),
    ] = None,
    time_unit: Annotated[TimeUnit, typer.Option("--time-unit")] = TimeUnit.weeks,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Fit BG/NBD and Gamma-Gamma; purchases on the same day count as one."""
    from ciclovita.value.transactions import fit_transaction_log

    end = None
    if observation_end:
        try:
            end = date.fromisoformat(observation_end)
        except ValueError as exc:
            raise typer.BadParameter(f"{observation_end!r} is not a date (YYYY-MM-DD)") from exc
    result = fit_transaction_log(
        transactions,
        customer_col=customer_col,
        date_col=date_col,
        amount_col=amount_col,
        observation_end=end,
        time_unit=time_unit.value,
    )
    if as_json:
        echo_json(result)
        return
    table = Table(title=f"Fit of {transactions} (time unit: {result['time_unit']})")
    table.add_column("model")
    table.add_column("parameter")
    table.add_column("value", justify="right")
    for name in ("r", "alpha", "a", "b"):
        table.add_row("BG/NBD", name, f"{result[name]:.6g}")
    table.add_row("BG/NBD", "log-likelihood", f"{result['bgnbd_loglik']:.4f}")
    for name in ("p", "q", "gamma"):
        table.add_row("Gamma-Gamma", name, f"{result[name]:.6g}")
    table.add_row("Gamma-Gamma", "log-likelihood", f"{result['gg_loglik']:.4f}")
    console.print(table)
    console.print(f"{result['n_customers']} customers, {result['n_repeat_buyers']} repeat buyers")
