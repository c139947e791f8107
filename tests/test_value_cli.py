"""``ciclovita value fit`` as a user runs it: a real subprocess on the CDNOW sample.

The published estimates (Fader, Hardie & Lee 2005, BG/NBD; Fader & Hardie 2013, Gamma-Gamma)
for the 39-week calibration period ending 1997-09-30, in weeks: r = 0.243, α = 4.414,
a = 0.793, b = 2.426 (log-likelihood −9582.4); p = 6.25, q = 3.74, γ = 15.44 on the 946
repeat buyers among the 2,357 customers.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
CDNOW = Path("tests/data/cdnow_sample.csv")  # relative to ROOT, as a user types it
KEYS = {
    "r",
    "alpha",
    "a",
    "b",
    "p",
    "q",
    "gamma",
    "bgnbd_loglik",
    "gg_loglik",
    "time_unit",
    "n_customers",
    "n_repeat_buyers",
    "backtest",
}
# value, and the half-unit of its last published digit: the fit must round to it
PUBLISHED = {
    "r": (0.243, 0.0005),
    "alpha": (4.414, 0.0005),
    "a": (0.793, 0.0005),
    "b": (2.426, 0.0005),
    "p": (6.25, 0.005),
    "q": (3.74, 0.005),
    "gamma": (15.44, 0.005),
    "bgnbd_loglik": (-9582.4, 0.05),
}
FIT_ARGS = ("--observation-end", "1997-09-30", "--time-unit", "weeks")


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CICLOVITA_")}
    env.update(PYTHONPATH=str(ROOT), COLUMNS="200", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return subprocess.run(
        [sys.executable, "-m", "ciclovita", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def assert_published(result: dict[str, Any]) -> None:
    for key, (value, tolerance) in PUBLISHED.items():
        assert result[key] == pytest.approx(value, abs=tolerance), key
    assert result["n_customers"] == 2357
    assert result["n_repeat_buyers"] == 946
    assert result["time_unit"] == "weeks"
    assert result["gg_loglik"] < 0


def flat(text: str) -> str:
    """Console output with line wrapping undone."""
    return " ".join(text.split())


def test_fit_json_prints_one_object_with_the_published_estimates() -> None:
    result = run_cli("value", "fit", "--transactions", str(CDNOW), *FIT_ARGS, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)  # the whole of stdout is one JSON document
    assert isinstance(data, dict)
    assert set(data) == KEYS
    assert_published(data)
    assert isinstance(data["n_customers"], int) and isinstance(data["n_repeat_buyers"], int)
    for key in ("r", "alpha", "a", "b", "p", "q", "gamma", "bgnbd_loglik", "gg_loglik"):
        assert isinstance(data[key], float), key


def test_fit_table_shows_every_parameter_and_the_counts() -> None:
    result = run_cli("value", "fit", "--transactions", str(CDNOW), *FIT_ARGS)
    assert result.returncode == 0, result.stderr
    with pytest.raises(json.JSONDecodeError):
        json.loads(result.stdout)
    rows: dict[tuple[str, str], str] = {}
    for line in result.stdout.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if len(cells) == 3 and cells[0] in ("BG/NBD", "Gamma-Gamma"):
            rows[(cells[0], cells[1])] = cells[2]
    assert set(rows) == {
        ("BG/NBD", "r"),
        ("BG/NBD", "alpha"),
        ("BG/NBD", "a"),
        ("BG/NBD", "b"),
        ("BG/NBD", "log-likelihood"),
        ("Gamma-Gamma", "p"),
        ("Gamma-Gamma", "q"),
        ("Gamma-Gamma", "gamma"),
        ("Gamma-Gamma", "log-likelihood"),
    }
    shown = {
        "r": rows[("BG/NBD", "r")],
        "alpha": rows[("BG/NBD", "alpha")],
        "a": rows[("BG/NBD", "a")],
        "b": rows[("BG/NBD", "b")],
        "bgnbd_loglik": rows[("BG/NBD", "log-likelihood")],
        "p": rows[("Gamma-Gamma", "p")],
        "q": rows[("Gamma-Gamma", "q")],
        "gamma": rows[("Gamma-Gamma", "gamma")],
    }
    assert_published(
        {
            **{key: float(value) for key, value in shown.items()},
            "n_customers": 2357,
            "n_repeat_buyers": 946,
            "time_unit": "weeks",
            "gg_loglik": float(rows[("Gamma-Gamma", "log-likelihood")]),
        }
    )
    assert "2357 customers, 946 repeat buyers" in result.stdout
    assert "weeks" in result.stdout


def test_missing_column_names_it_and_lists_the_available_ones() -> None:
    result = run_cli(
        "value", "fit", "--transactions", str(CDNOW), "--amount-col", "price", "--json"
    )
    assert result.returncode == 1
    assert result.stdout == ""
    message = flat(result.stderr)
    assert "Traceback" not in result.stderr
    assert f"{CDNOW}:1: price: missing column 'price'" in message
    assert "columns: customer_id, date, cds, amount" in message


def test_custom_column_names_on_a_renamed_copy(tmp_path: Path) -> None:
    original = (ROOT / CDNOW).read_text(encoding="utf-8")
    header, rest = original.split("\n", 1)
    assert header == "customer_id,date,cds,amount"
    renamed = tmp_path / "purchases.csv"
    renamed.write_text("client,day,cds,spent\n" + rest, encoding="utf-8")

    default_names = run_cli("value", "fit", "--transactions", str(renamed), *FIT_ARGS)
    assert default_names.returncode == 1
    assert re.search(r"missing column 'customer_id'", flat(default_names.stderr))
    assert "client, day, cds, spent" in flat(default_names.stderr)

    result = run_cli(
        "value",
        "fit",
        "--transactions",
        str(renamed),
        "--customer-col",
        "client",
        "--date-col",
        "day",
        "--amount-col",
        "spent",
        *FIT_ARGS,
        "--json",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == KEYS
    assert_published(data)
