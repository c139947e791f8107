"""``ciclovita value fit``: BG/NBD and Gamma-Gamma on any transaction log."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

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
    backtest_days: Annotated[
        int | None,
        typer.Option(
            "--backtest-days",
            min=0,
            help="Backtest: refit without the last N days and compare the predictions for "
            "them with what happened (default: a quarter of the observed span, at most a "
            "year; 0: no backtest).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Fit BG/NBD and Gamma-Gamma; purchases on the same day count as one.

    Also backtests the fit (see README, "Customer value"): how far to trust its predictions.
    """
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
        backtest_days="auto" if backtest_days is None else backtest_days,
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
    backtest = result.get("backtest")
    if isinstance(backtest, dict):
        _print_backtest(backtest)


def _print_backtest(backtest: dict[str, Any]) -> None:
    """The backtest under the parameters: totals, errors, and calibration by decile."""
    console.print()
    if "skipped" in backtest:
        console.print(f"Backtest ({backtest['holdout_days']} days) skipped: {backtest['skipped']}")
        return
    console.print(
        f"Backtest: refitted on the data up to {backtest['calibration_end']}, then predicted "
        f"the {backtest['holdout_days']} days to {backtest['observation_end']} for the "
        f"{backtest['customers']} customers of that period"
    )
    error = backtest["aggregate_error"]
    console.print(
        f"  purchases: predicted {backtest['predicted_purchases']:,.1f}, actual "
        f"{backtest['actual_purchases']:,}"
        + (f" (aggregate error {error:+.1%})" if error is not None else "")
    )
    console.print(
        f"  mean absolute error: {backtest['mean_absolute_error']:.3f} purchases per customer "
        f"(actual mean {backtest['mean_actual_purchases']:.3f})"
    )
    if backtest["predicted_revenue"] is not None:
        revenue_error = backtest["revenue_error"]
        console.print(
            f"  revenue: predicted {backtest['predicted_revenue']:,.2f}, actual "
            f"{backtest['actual_revenue']:,.2f}"
            + (f" (aggregate error {revenue_error:+.1%})" if revenue_error is not None else "")
        )
    table = Table(title="Calibration by decile of predicted purchases")
    table.add_column("decile", justify="right")
    table.add_column("customers", justify="right")
    table.add_column("mean predicted", justify="right")
    table.add_column("mean actual", justify="right")
    for row in backtest["deciles"]:
        table.add_row(
            str(row["decile"]),
            str(row["customers"]),
            f"{row['mean_predicted']:.3f}",
            f"{row['mean_actual']:.3f}",
        )
    console.print(table)
