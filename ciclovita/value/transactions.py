"""Transaction logs for the value models: summarising purchases and fitting from a CSV file.

This module owns the step from a raw transaction log (one row per purchase: customer, date,
amount) to the per-customer summary the BG/NBD and Gamma-Gamma models take, and the
"fit both models from a CSV file" entry point behind ``ciclovita value fit``.

Conventions, as in Fader, Hardie & Lee (2005) and Fader & Hardie (2013):

* time is measured in whole days (any time of day is dropped), then expressed in the chosen
  unit (``weeks`` = days / 7);
* all purchases by a customer on one day count as one transaction, whose amount is their sum;
* ``frequency`` is the number of *repeat* purchase days (purchase days after the first),
  ``recency`` the time from the first to the last purchase day, ``T`` the time from the first
  purchase day to the end of the observation period (inclusive: purchases on
  ``observation_end`` itself count), and ``monetary_value`` the mean amount of the repeat
  purchase days (the first purchase is left out; 0 when there is none).
"""

from __future__ import annotations

import re
from datetime import date, datetime
from pathlib import Path
from typing import Literal, cast

import numpy as np
import pandas as pd

from ciclovita.errors import InputError, Problem
from ciclovita.value.bgnbd import fit_bgnbd
from ciclovita.value.gamma_gamma import fit_gamma_gamma

__all__ = ["TimeUnit", "fit_transaction_log", "read_transaction_log", "summarise_transactions"]

TimeUnit = Literal["days", "weeks"]

_DAYS_PER_UNIT: dict[str, int] = {"days": 1, "weeks": 7}
_SUMMARY_COLUMNS = ["frequency", "recency", "T", "monetary_value", "n_transactions"]

_ISO_DATE = re.compile(
    r"(\d{4}-\d{2}-\d{2})"
    r"(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?"
)
_COMPACT_DATE = re.compile(r"\d{8}")


def _days_per_unit(time_unit: str) -> int:
    try:
        return _DAYS_PER_UNIT[time_unit]
    except KeyError:
        raise ValueError(
            f"time_unit must be one of {', '.join(_DAYS_PER_UNIT)}, got {time_unit!r}"
        ) from None


def _as_day(value: date | datetime) -> pd.Timestamp:
    """The calendar day of ``value`` (a datetime's time of day and time zone are dropped)."""
    if isinstance(value, datetime):
        value = value.date()
    if not isinstance(value, date):
        raise ValueError(f"observation_end must be a date or datetime, got {value!r}")
    return pd.Timestamp(value)


def _to_days(values: pd.Series) -> pd.Series:
    """Datetime-like values as tz-naive midnight timestamps (wall-clock calendar day)."""
    stamps = values if pd.api.types.is_datetime64_any_dtype(values) else pd.to_datetime(values)
    stamps = cast(pd.Series, stamps)
    if isinstance(stamps.dtype, pd.DatetimeTZDtype):
        stamps = stamps.dt.tz_localize(None)
    return stamps.dt.normalize()


def summarise_transactions(
    df: pd.DataFrame,
    *,
    customer_col: str,
    date_col: str,
    amount_col: str | None,
    observation_end: date | datetime | None = None,
    time_unit: TimeUnit = "days",
) -> pd.DataFrame:
    """Summarise a transaction log per customer for model fitting.

    ``df`` has one row per transaction. ``date_col`` holds datetimes (or strings pandas can
    parse); ``amount_col`` numbers, or None when amounts are unknown (``monetary_value`` is
    then NaN). Rows dated after ``observation_end`` (default: the last date in ``df``) are
    ignored, and so are customers whose first purchase comes after it.

    Returns a frame indexed by customer (sorted; index named ``customer_col``) with columns
    ``frequency`` (int), ``recency``, ``T``, ``monetary_value`` (floats, see the module
    docstring) and ``n_transactions`` (int: rows of the log on or before ``observation_end``,
    before same-day purchases are merged).

    Raises ValueError for a missing column, a missing customer id, or a date or amount that
    cannot be read.
    """
    unit_days = _days_per_unit(time_unit)
    needed = [customer_col, date_col] + ([amount_col] if amount_col is not None else [])
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(
            f"missing column(s) {', '.join(map(repr, missing))}; the frame has columns: "
            f"{', '.join(map(str, df.columns))}"
        )
    customers = df[customer_col]
    if customers.isna().any():
        i = int(np.argmax(customers.isna().to_numpy()))
        raise ValueError(f"row {i} has no {customer_col!r}")
    try:
        days = _to_days(df[date_col])
    except (ValueError, TypeError) as exc:
        raise ValueError(f"column {date_col!r} does not hold dates: {exc}") from None
    if days.isna().any():
        i = int(np.argmax(days.isna().to_numpy()))
        raise ValueError(f"row {i} has no {date_col!r}")
    if amount_col is not None:
        amounts = pd.to_numeric(df[amount_col], errors="coerce").astype(np.float64)
        bad = ~np.isfinite(amounts.to_numpy())
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"row {i} has an {amount_col!r} that is not a finite number: "
                f"{df[amount_col].iloc[i]!r}"
            )
    else:
        amounts = pd.Series(0.0, index=df.index)

    # whole days since the epoch
    day = days.to_numpy(dtype="datetime64[ns]").astype("datetime64[D]").astype(np.int64)
    value = amounts.to_numpy(dtype=np.float64)
    if observation_end is not None:
        end = int(np.datetime64(_as_day(observation_end).date(), "D").astype(np.int64))
    else:
        end = int(day.max()) if len(day) else 0
    keep = day <= end
    if not keep.any():
        empty = pd.DataFrame(
            {
                "frequency": np.zeros(0, dtype=np.int64),
                "recency": np.zeros(0),
                "T": np.zeros(0),
                "monetary_value": np.zeros(0),
                "n_transactions": np.zeros(0, dtype=np.int64),
            },
            index=pd.Index(customers[:0], name=customer_col),
        )
        return empty
    codes, labels = pd.factorize(customers[keep], sort=True)
    day, value = day[keep], value[keep]

    # purchase days: rows sorted by (customer, day); one group per distinct pair
    order = np.lexsort((day, codes))
    codes, day, value = codes[order], day[order], value[order]
    new_day = np.ones(len(day), dtype=bool)
    new_day[1:] = (codes[1:] != codes[:-1]) | (day[1:] != day[:-1])
    day_start = np.flatnonzero(new_day)
    day_code, day_day = codes[day_start], day[day_start]
    day_value = np.add.reduceat(value, day_start)
    day_rows = np.diff(np.append(day_start, len(day)))

    # customers: one group of purchase days each
    new_customer = np.ones(len(day_start), dtype=bool)
    new_customer[1:] = day_code[1:] != day_code[:-1]
    customer_start = np.flatnonzero(new_customer)
    customer_end = np.append(customer_start[1:], len(day_start)) - 1
    first, last = day_day[customer_start], day_day[customer_end]
    n_days = customer_end - customer_start + 1
    frequency = (n_days - 1).astype(np.int64)
    n_transactions = np.add.reduceat(day_rows, customer_start)
    if amount_col is not None:
        repeat_value = np.where(new_customer, 0.0, day_value)  # the first day left out
        repeat_sum = np.add.reduceat(repeat_value, customer_start)
        monetary = np.divide(
            repeat_sum, frequency, out=np.zeros(len(frequency)), where=frequency > 0
        )
    else:
        monetary = np.full(len(frequency), np.nan)

    summary = pd.DataFrame(
        {
            "frequency": frequency,
            "recency": (last - first).astype(np.float64) / unit_days,
            "T": (end - first).astype(np.float64) / unit_days,
            "monetary_value": monetary,
            "n_transactions": n_transactions.astype(np.int64),
        },
        index=pd.Index(labels[day_code[customer_start]], name=customer_col),
        columns=_SUMMARY_COLUMNS,
    )
    return summary


# --------------------------------------------------------------------------------------------
# fitting from a CSV file


def fit_transaction_log(
    path: Path,
    *,
    customer_col: str = "customer_id",
    date_col: str = "date",
    amount_col: str = "amount",
    observation_end: date | datetime | None = None,
    time_unit: TimeUnit = "weeks",
    date_format: str | None = None,
    backtest_days: int | Literal["auto"] | None = None,
) -> dict[str, object]:
    """Fit the BG/NBD and Gamma-Gamma models to a transaction-log CSV file.

    The file has a header line and one row per transaction. Dates are ISO (``2024-03-01``,
    optionally with a time, which is dropped) or compact ``YYYYMMDD`` (as in the CDNOW data),
    recognised value by value when ``date_format`` is None; otherwise ``date_format`` is a
    ``strptime`` format. Amounts must be plain non-negative numbers. The Gamma-Gamma model is
    fitted on the repeat buyers whose mean repeat amount is positive.

    Returns ``r``, ``alpha``, ``a``, ``b`` (BG/NBD, ``alpha`` in ``time_unit``), ``p``, ``q``,
    ``gamma`` (Gamma-Gamma, ``gamma`` in the amount's unit), ``bgnbd_loglik``, ``gg_loglik``,
    ``time_unit``, ``n_customers`` and ``n_repeat_buyers`` (customers with frequency > 0).

    ``backtest_days`` adds ``backtest`` (:mod:`ciclovita.value.backtest`): the models fitted
    again without the last ``backtest_days`` days (``"auto"``: a quarter of the observed
    span, capped) and their predictions for those days compared with what happened. A
    backtest that cannot run is reported as ``{"holdout_days": ..., "skipped": reason}``
    and does not fail the fit. None or 0: no backtest.

    Raises InputError listing every problem found: a missing or unreadable file, missing
    columns (naming the columns the file has), unreadable dates or amounts (with their line
    numbers and values), no customers, too few repeat buyers, or a fit that does not converge.
    """
    _days_per_unit(time_unit)
    source = str(path)
    log = read_transaction_log(
        path,
        customer_col=customer_col,
        date_col=date_col,
        amount_col=amount_col,
        date_format=date_format,
    )
    summary = summarise_transactions(
        log,
        customer_col=customer_col,
        date_col=date_col,
        amount_col=amount_col,
        observation_end=observation_end,
        time_unit=time_unit,
    )
    if len(summary) == 0:
        end = _as_day(observation_end).date() if observation_end is not None else None
        raise InputError([Problem(source, f"no purchases on or before the observation end {end}")])

    x = summary["frequency"].to_numpy(dtype=np.float64)
    try:
        bgnbd = fit_bgnbd(
            x,
            summary["recency"].to_numpy(dtype=np.float64),
            summary["T"].to_numpy(dtype=np.float64),
        )
    except ValueError as exc:  # the summary is valid by construction; kept as a safety net
        raise InputError([Problem(source, f"cannot fit the BG/NBD model: {exc}")]) from exc
    if not bgnbd.converged:
        raise InputError(
            [
                Problem(
                    source,
                    "the BG/NBD fit did not converge to an interior maximum (ended at "
                    + ", ".join(f"{k}={v:.4g}" for k, v in bgnbd.params.as_dict().items())
                    + "); the data may not suit the model (for example: too few repeat "
                    "purchases, or no sign of variation in purchase rates between customers)",
                )
            ]
        )

    monetary = summary["monetary_value"].to_numpy(dtype=np.float64)
    spenders = (x > 0) & (monetary > 0)
    try:
        gg = fit_gamma_gamma(x[spenders], monetary[spenders])
    except ValueError as exc:
        raise InputError(
            [Problem(source, f"cannot fit the Gamma-Gamma spend model: {exc}")]
        ) from exc
    if not gg.converged:
        raise InputError(
            [
                Problem(
                    source,
                    "the Gamma-Gamma fit did not converge (ended at "
                    + ", ".join(f"{k}={v:.4g}" for k, v in gg.params.as_dict().items())
                    + ")",
                )
            ]
        )

    result: dict[str, object] = {
        "r": bgnbd.params.r,
        "alpha": bgnbd.params.alpha,
        "a": bgnbd.params.a,
        "b": bgnbd.params.b,
        "p": gg.params.p,
        "q": gg.params.q,
        "gamma": gg.params.gamma,
        "bgnbd_loglik": bgnbd.log_likelihood,
        "gg_loglik": gg.log_likelihood,
        "time_unit": time_unit,
        "n_customers": len(summary),
        "n_repeat_buyers": int((x > 0).sum()),
    }
    if backtest_days:
        result["backtest"] = _backtest(
            log,
            customer_col=customer_col,
            date_col=date_col,
            amount_col=amount_col,
            observation_end=observation_end,
            backtest_days=backtest_days,
            time_unit=time_unit,
        )
    return result


def _backtest(
    log: pd.DataFrame,
    *,
    customer_col: str,
    date_col: str,
    amount_col: str,
    observation_end: date | datetime | None,
    backtest_days: int | Literal["auto"],
    time_unit: TimeUnit,
) -> dict[str, object]:
    """The backtest as a dict, or why it was skipped (it never fails the fit)."""
    from ciclovita.value.backtest import (
        BacktestUnavailable,
        backtest_transactions,
        default_holdout_days,
    )

    end = _as_day(observation_end) if observation_end is not None else log[date_col].max()
    if backtest_days == "auto":
        holdout = default_holdout_days(log[date_col].min().date(), end.date())
    else:
        holdout = backtest_days
    try:
        backtest = backtest_transactions(
            log[log[date_col] <= end],
            customer_col=customer_col,
            date_col=date_col,
            amount_col=amount_col,
            observation_end=end.date(),
            holdout_days=holdout,
            time_unit=time_unit,
        )
    except BacktestUnavailable as exc:
        return {"holdout_days": holdout, "skipped": str(exc)}
    return backtest.as_dict()


def read_transaction_log(
    path: Path,
    *,
    customer_col: str = "customer_id",
    date_col: str = "date",
    amount_col: str = "amount",
    date_format: str | None = None,
) -> pd.DataFrame:
    """Read and check a transaction-log CSV file: one row per transaction, dates parsed.

    Returns a frame with the three columns (text ids, midnight timestamps, float amounts),
    blank lines left out. Raises InputError as :func:`fit_transaction_log` does.
    """
    source = str(path)
    frame = _read_csv(path, source)

    missing = [c for c in dict.fromkeys((customer_col, date_col, amount_col)) if c not in frame]
    if missing:
        available = ", ".join(map(str, frame.columns)) or "(none)"
        raise InputError(
            [
                Problem(
                    source=source,
                    line=1,
                    column=name,
                    message=f"missing column {name!r}; the file has columns: {available}",
                )
                for name in missing
            ]
        )

    lines = pd.Series(np.arange(len(frame)) + 2, index=frame.index)  # header is line 1
    stripped = frame[[customer_col, date_col, amount_col]].apply(lambda s: s.str.strip())
    blank = (stripped == "").all(axis=1)  # a blank line has no other field either
    if blank.any():
        blank[blank] = (frame[blank].apply(lambda s: s.str.strip()) == "").all(axis=1)
    stripped, lines = stripped[~blank], lines[~blank]

    problems: list[Problem] = []
    no_id = stripped[customer_col] == ""
    problems += [
        Problem(source, "missing customer id", line=int(n), column=customer_col, value="")
        for n in lines[no_id]
    ]
    days, date_problems = _parse_dates(stripped[date_col], lines, date_format, source, date_col)
    problems += date_problems
    amounts, amount_problems = _parse_amounts(stripped[amount_col], lines, source, amount_col)
    problems += amount_problems
    if problems:
        problems.sort(key=lambda p: p.line or 0)
        raise InputError(problems)
    if len(stripped) == 0:
        raise InputError([Problem(source, "the file has no transactions")])

    return pd.DataFrame({customer_col: stripped[customer_col], date_col: days, amount_col: amounts})


def _read_csv(path: Path, source: str) -> pd.DataFrame:
    """Read every field as text; blank lines are kept (as empty rows) so that row i is line i+2.

    (Line numbers assume no quoted field spans several lines.)
    """
    if not path.exists():
        raise InputError([Problem(source, "file not found")])
    if not path.is_file():
        raise InputError([Problem(source, "not a file")])
    try:
        frame = pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            skip_blank_lines=False,
            encoding="utf-8-sig",
        )
    except pd.errors.EmptyDataError:
        raise InputError([Problem(source, "the file is empty (no header line)")]) from None
    except pd.errors.ParserError as exc:
        match = re.search(r"line (\d+)", str(exc))
        line = int(match.group(1)) if match else None
        raise InputError([Problem(source, f"not a valid CSV file: {exc}", line=line)]) from None
    except UnicodeDecodeError as exc:
        raise InputError([Problem(source, f"not UTF-8 text: {exc}")]) from None
    except OSError as exc:
        raise InputError([Problem(source, f"cannot read the file: {exc}")]) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame.astype(object).fillna("").astype(str)


def _parse_dates(
    values: pd.Series,
    lines: pd.Series,
    date_format: str | None,
    source: str,
    column: str,
) -> tuple[pd.Series, list[Problem]]:
    """Parse date strings to midnight timestamps; report each bad one with its line."""
    if date_format is None:
        # plain YYYY-MM-DD first (fast), then the rest: ISO with a time, or YYYYMMDD
        days = pd.to_datetime(values, format="%Y-%m-%d", errors="coerce")
        rest = days.isna() & (values != "")
        if rest.any():
            other = values[rest]
            iso = other.str.extract(f"^{_ISO_DATE.pattern}$", expand=False)
            iso_days = pd.to_datetime(iso, format="%Y-%m-%d", errors="coerce")
            compact = other.where(other.str.fullmatch(_COMPACT_DATE.pattern), None)
            compact_days = pd.to_datetime(compact, format="%Y%m%d", errors="coerce")
            days = days.copy()
            days[rest] = iso_days.fillna(compact_days)
        expected = "a date (YYYY-MM-DD or YYYYMMDD)"
    else:
        try:
            parsed = pd.to_datetime(values, format=date_format, errors="coerce")
            days = _to_days(cast(pd.Series, parsed))
        except (ValueError, TypeError):  # e.g. mixed UTC offsets with %z: go value by value
            days = pd.Series(
                [_strptime_day(v, date_format) for v in values],
                index=values.index,
                dtype="datetime64[ns]",
            )
        expected = f"a date in the format {date_format!r}"
    bad = days.isna()
    problems = [
        Problem(
            source,
            "missing date" if value == "" else f"not {expected}",
            line=int(line),
            column=column,
            value=value,
        )
        for value, line in zip(values[bad], lines[bad], strict=True)
    ]
    return days.dt.normalize(), problems


def _strptime_day(value: str, date_format: str) -> pd.Timestamp | None:
    try:
        return pd.Timestamp(datetime.strptime(value, date_format).date())
    except ValueError:
        return None


def _parse_amounts(
    values: pd.Series, lines: pd.Series, source: str, column: str
) -> tuple[pd.Series, list[Problem]]:
    """Parse amount strings to floats; report each missing, non-numeric or negative one."""
    amounts = pd.to_numeric(values, errors="coerce").astype(np.float64)
    arr = amounts.to_numpy()
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(arr) | (arr < 0)
    problems = []
    for value, number, line in zip(values[bad], arr[bad], lines[bad], strict=True):
        if value == "":
            message = "missing amount"
        elif np.isfinite(number):
            message = "amount must not be negative"
        else:
            message = "not a number"
        problems.append(Problem(source, message, line=int(line), column=column, value=value))
    return amounts, problems
