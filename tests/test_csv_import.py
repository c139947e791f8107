"""CSV imports of customers, orders and events, on SQLite and PostgreSQL.

Every bad row is reported with its line, column and value and nothing is written; with
``skip_bad_rows`` the good rows go in and the bad ones are listed; re-importing a file does
not duplicate anything.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from ciclovita.db.models import Consent, Customer, Event, Order
from ciclovita.errors import InputError, Problem
from ciclovita.ingest.csv_import import ImportReport, import_csv

CUSTOMERS = """\
customer_id,email,first_name,last_name,locale,timezone,country,birth_date,acquisition_channel,acquisition_cost,created_at,referred_by,consent_marketing,consent_surveys,attr_tier,attr_visits
C-1,Anna.Rossi@Example.COM,Anna,Rossi,it,Europe/Rome,it,1985-04-12,ads,12.50,2024-01-10T09:30:00+01:00,C-3,sì,no,gold,12
C-2,,Bob,Smith,en,America/New_York,US,,,,,,,,,
C-3,carla@example.com,Carla,Bianchi,,,,,referral,0,2024-01-01,,1,,,
"""

ORDERS = """\
order_id,customer_id,placed_at,amount,currency,status,referral_code
O-1,C-1,2024-03-01,12.50,,,
O-2,C-1,2024-03-05T18:00:00+02:00,99,eur,pending,FRIEND10
O-3,C-2,2024-03-06 10:15:00,0.5,USD,refunded,
"""

EVENTS = """\
event_id,customer_id,type,occurred_at,properties
E-1,C-1,site_visit,2024-03-01T10:00:00Z,"{""page"": ""/pricing""}"
,C-2,signup,2024-03-02,
,C-2,signup,2024-03-02,
"""


def write(tmp_path: Path, text: str, name: str = "data.csv", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def count(engine: Engine, model: Any) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(model)).scalar_one())


def rows_by_key(engine: Engine, model: Any) -> dict[str, Any]:
    from sqlalchemy.orm import Session

    with Session(engine) as session:
        found = {r.external_id: r for r in session.scalars(select(model))}
        session.expunge_all()
        return found


def consents(engine: Engine) -> dict[tuple[str, str], Consent]:
    from sqlalchemy.orm import Session

    with Session(engine) as session:
        query = select(Customer.external_id, Consent).join(
            Consent, Consent.customer_id == Customer.id
        )
        found = {(key, consent.topic): consent for key, consent in session.execute(query).all()}
        session.expunge_all()
        return found


def import_base(engine: Engine, tmp_path: Path) -> None:
    import_csv(engine, "customers", write(tmp_path, CUSTOMERS, "customers.csv"))


def problems_of(engine: Engine, kind: Any, path: Path) -> list[Problem]:
    with pytest.raises(InputError) as caught:
        import_csv(engine, kind, path)
    return caught.value.problems


# ---------------------------------------------------------------------------- happy paths


def test_customers_import_every_column(engine: Engine, tmp_path: Path) -> None:
    report = import_csv(engine, "customers", write(tmp_path, CUSTOMERS))

    assert (report.rows_read, report.inserted, report.updated, report.unchanged) == (3, 3, 0, 0)
    assert report.skipped == []
    customers = rows_by_key(engine, Customer)
    anna, bob, carla = customers["C-1"], customers["C-2"], customers["C-3"]
    assert anna.email == "anna.rossi@example.com"
    assert (anna.first_name, anna.last_name, anna.locale) == ("Anna", "Rossi", "it")
    assert (anna.country, anna.birth_date) == ("IT", date(1985, 4, 12))
    assert (anna.acquisition_channel, anna.acquisition_cost_cents) == ("ads", 1250)
    assert anna.created_at == datetime(2024, 1, 10, 8, 30, tzinfo=UTC)
    assert anna.attributes == {"tier": "gold", "visits": 12}
    assert anna.referred_by_id == carla.id  # a referrer further down the file
    assert bob.email is None
    assert (bob.timezone, bob.country, bob.referred_by_id) == ("America/New_York", "US", None)
    assert bob.acquisition_cost_cents == 0
    assert bob.attributes == {}
    assert (carla.locale, carla.timezone) == ("it", "Europe/Rome")  # defaults
    assert carla.created_at == datetime(2024, 1, 1, tzinfo=UTC)
    granted = {key: c.granted for key, c in consents(engine).items()}
    assert granted == {
        ("C-1", "marketing"): True,
        ("C-1", "surveys"): False,
        ("C-3", "marketing"): True,
    }
    assert all(c.source == "import" for c in consents(engine).values())
    assert "3 inserted" in report.summary()


def test_orders_import(engine: Engine, tmp_path: Path) -> None:
    import_base(engine, tmp_path)
    report = import_csv(engine, "orders", write(tmp_path, ORDERS))

    assert (report.inserted, report.updated, report.unchanged) == (3, 0, 0)
    orders = rows_by_key(engine, Order)
    customers = rows_by_key(engine, Customer)
    first, second, third = orders["O-1"], orders["O-2"], orders["O-3"]
    assert first.customer_id == customers["C-1"].id
    assert (first.amount_cents, first.currency, first.status) == (1250, "EUR", "completed")
    assert first.placed_at == datetime(2024, 3, 1, tzinfo=UTC)
    assert first.referral_code is None
    assert second.placed_at == datetime(2024, 3, 5, 16, 0, tzinfo=UTC)  # offset honoured
    assert (second.amount_cents, second.currency, second.status) == (9900, "EUR", "pending")
    assert second.referral_code == "FRIEND10"
    assert third.placed_at == datetime(2024, 3, 6, 10, 15, tzinfo=UTC)  # naive is UTC
    assert (third.amount_cents, third.currency, third.status) == (50, "USD", "refunded")


def test_orders_amount_cents_column(engine: Engine, tmp_path: Path) -> None:
    import_base(engine, tmp_path)
    path = write(tmp_path, "order_id,customer_id,placed_at,amount_cents\nO-9,C-2,2024-05-01,1999\n")
    import_csv(engine, "orders", path)
    assert rows_by_key(engine, Order)["O-9"].amount_cents == 1999


def test_events_import_with_and_without_event_id(engine: Engine, tmp_path: Path) -> None:
    import_base(engine, tmp_path)
    report = import_csv(engine, "events", write(tmp_path, EVENTS))

    assert report.inserted == 3  # two identical signups without an id are both kept
    events = rows_by_key(engine, Event)
    visit = events["E-1"]
    assert (visit.type, visit.properties) == ("site_visit", {"page": "/pricing"})
    assert visit.occurred_at == datetime(2024, 3, 1, 10, tzinfo=UTC)
    derived = [e for key, e in events.items() if key != "E-1"]
    assert {e.type for e in derived} == {"signup"}
    assert all(e.properties == {} and len(e.external_id) <= 64 for e in derived)


# ---------------------------------------------------------------------------- re-imports


@pytest.mark.parametrize(("kind", "text"), [("customers", CUSTOMERS), ("orders", ORDERS),
                                            ("events", EVENTS)])  # fmt: skip
def test_reimport_inserts_nothing(engine: Engine, tmp_path: Path, kind: Any, text: str) -> None:
    import_base(engine, tmp_path)
    path = write(tmp_path, text)
    import_csv(engine, kind, path)
    before = {m: count(engine, m) for m in (Customer, Order, Event, Consent)}

    again = import_csv(engine, kind, path)

    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 3)
    assert {m: count(engine, m) for m in (Customer, Order, Event, Consent)} == before
    assert "3 unchanged" in again.summary()


def test_changed_rows_update(engine: Engine, tmp_path: Path) -> None:
    import_base(engine, tmp_path)
    first_consents = consents(engine)
    changed = CUSTOMERS.replace("Anna.Rossi@Example.COM", "anna@new.example").replace(
        "C-3,carla@example.com,Carla,Bianchi,,,,,referral,0,2024-01-01,,1",
        "C-3,carla@example.com,Carla,Bianchi,,,,,referral,0,2024-01-01,,0",
    )

    report = import_csv(engine, "customers", write(tmp_path, changed, "changed.csv"))

    assert (report.inserted, report.updated, report.unchanged) == (0, 2, 1)
    customers = rows_by_key(engine, Customer)
    assert customers["C-1"].email == "anna@new.example"
    assert customers["C-1"].referred_by_id == customers["C-3"].id
    after = consents(engine)
    assert after[("C-3", "marketing")].granted is False
    assert (
        after[("C-3", "marketing")].recorded_at > first_consents[("C-3", "marketing")].recorded_at
    )
    same = ("C-1", "marketing")
    assert after[same].recorded_at == first_consents[same].recorded_at  # value did not change

    orders_path = write(tmp_path, ORDERS, "orders.csv")
    import_csv(engine, "orders", orders_path)
    changed_orders = ORDERS.replace("O-1,C-1,2024-03-01,12.50", "O-1,C-1,2024-03-01,13.00")
    report = import_csv(engine, "orders", write(tmp_path, changed_orders, "orders2.csv"))
    assert (report.inserted, report.updated, report.unchanged) == (0, 1, 2)
    assert rows_by_key(engine, Order)["O-1"].amount_cents == 1300
    assert count(engine, Order) == 3


def test_columns_left_out_keep_their_values(engine: Engine, tmp_path: Path) -> None:
    import_base(engine, tmp_path)
    path = write(tmp_path, "customer_id,first_name\nC-1,Annalisa\nC-4,Dario\n")

    report = import_csv(engine, "customers", path)

    assert (report.inserted, report.updated) == (1, 1)
    customers = rows_by_key(engine, Customer)
    anna = customers["C-1"]
    assert (anna.first_name, anna.email) == ("Annalisa", "anna.rossi@example.com")
    assert anna.attributes == {"tier": "gold", "visits": 12}
    assert anna.referred_by_id == customers["C-3"].id
    assert consents(engine)[("C-1", "marketing")].granted is True
    assert customers["C-4"].locale == "it"


# ---------------------------------------------------------------------------- bad input

BAD_ROWS = [
    pytest.param(
        "orders",
        "order_id,customer_id,placed_at,amount\nO-1,C-1,2024-03-01,1\nO-2,C-1,01/03/2024,1\n",
        3, "placed_at", "01/03/2024", "use YYYY-MM-DD or ISO 8601",
        id="bad-date",
    ),
    pytest.param(
        "orders",
        "order_id,customer_id,placed_at,amount\nO-1,C-1,2024-03-01,12.505\n",
        2, "amount", "12.505", "more than 2 decimal places",
        id="three-decimals",
    ),
    pytest.param(
        "orders",
        "order_id,customer_id,placed_at,amount\nO-1,C-1,2024-03-01,-5.00\n",
        2, "amount", "-5.00", "negative amount",
        id="negative-amount",
    ),
    pytest.param(
        "orders",
        "order_id,customer_id,placed_at,amount\nO-1,C-1,2024-03-01,dieci\n",
        2, "amount", "dieci", "not an amount",
        id="not-a-number",
    ),
    pytest.param(
        "orders",
        "order_id,customer_id,placed_at,amount,status\nO-1,C-1,2024-03-01,1,shipped\n",
        2, "status", "shipped", "accepted: completed, pending, cancelled, refunded",
        id="unknown-status",
    ),
    pytest.param(
        "orders",
        "order_id,customer_id,placed_at,amount\nO-1,C-1,2024-03-01,1\nO-2,C-999,2024-03-01,1\n",
        3, "customer_id", "C-999", "customer 'C-999' not found (import customers first)",
        id="unknown-customer",
    ),
    pytest.param(
        "orders",
        "order_id,customer_id,placed_at,amount\nO-1,C-1,2024-03-01,1\nO-1,C-2,2024-03-02,2\n",
        3, "order_id", "O-1", "also on line 2",
        id="duplicated-id",
    ),
    pytest.param(
        "orders",
        "order_id,customer_id,placed_at\nO-1,C-1,2024-03-01\n",
        1, "amount", None, "missing required column 'amount' or 'amount_cents'",
        id="missing-column",
    ),
    pytest.param(
        "customers",
        "customer_id,locale\nC-9,fr\n",
        2, "locale", "fr", "unknown locale; accepted: it, en",
        id="unknown-locale",
    ),
    pytest.param(
        "customers",
        "customer_id,email\nC-9,anna.example.com\n",
        2, "email", "anna.example.com", "not an email address",
        id="bad-email",
    ),
    pytest.param(
        "customers",
        "customer_id,email\nC-9,anna..rossi@example.com\n",
        2, "email", "anna..rossi@example.com", "cannot have two periods in a row",
        id="email-validator-rule",
    ),
    pytest.param(
        "customers",
        "customer_id,timezone\nC-9,Rome\n",
        2, "timezone", "Rome", "IANA name",
        id="bad-timezone",
    ),
    pytest.param(
        "customers",
        "customer_id,consent_marketing\nC-9,maybe\n",
        2, "consent_marketing", "maybe", "accepted: true, false, yes, no, sì, si, 1, 0",
        id="bad-consent",
    ),
    pytest.param(
        "customers",
        "customer_id,referred_by\nC-9,C-404\n",
        2, "referred_by", "C-404", "customer 'C-404' not found",
        id="unknown-referrer",
    ),
    pytest.param(
        "customers",
        "customer_id,emial\nC-9,a@b.it\n",
        1, "emial", "emial", "did you mean 'email'?",
        id="unknown-column",
    ),
    pytest.param(
        "customers",
        "customer_id,email,Email\nC-9,a@b.it,a@b.it\n",
        1, "email", "Email", "appears twice",
        id="duplicated-column",
    ),
    pytest.param(
        "customers",
        "email\na@b.it\n",
        1, "customer_id", None, "missing required column 'customer_id'",
        id="missing-id-column",
    ),
    pytest.param(
        "events",
        'customer_id,type,occurred_at,properties\nC-1,site_visit,2024-03-01,"[1, 2]"\n',
        2, "properties", "[1, 2]", "not a JSON object",
        id="json-not-an-object",
    ),
    pytest.param(
        "events",
        "customer_id,type,occurred_at,properties\nC-1,site_visit,2024-03-01,{page: 1}\n",
        2, "properties", "{page: 1}", "not a JSON object",
        id="bad-json",
    ),
    pytest.param(
        "events",
        "customer_id,type,occurred_at\nC-1,Site Visit,2024-03-01\n",
        2, "type", "Site Visit", "lowercase identifier",
        id="bad-event-type",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "text", "line", "column", "value", "message"), BAD_ROWS)
def test_bad_input_is_located_and_nothing_is_written(
    engine: Engine,
    tmp_path: Path,
    kind: Any,
    text: str,
    line: int,
    column: str,
    value: str | None,
    message: str,
) -> None:
    import_base(engine, tmp_path)
    before = {m: count(engine, m) for m in (Customer, Order, Event, Consent)}
    path = write(tmp_path, text, "bad.csv")

    problems = problems_of(engine, kind, path)

    assert len(problems) == 1, problems
    problem = problems[0]
    assert (problem.source, problem.line, problem.column, problem.value) == (
        str(path),
        line,
        column,
        value,
    )
    assert message in problem.message
    assert {m: count(engine, m) for m in (Customer, Order, Event, Consent)} == before


def test_every_problem_is_reported(engine: Engine, tmp_path: Path) -> None:
    text = (
        "customer_id,email,locale,birth_date\n"
        "C-1,ok@example.com,it,1990-01-01\n"
        "C-2,not-an-email,de,1990-02-30\n"
        "C-3,ok3@example.com,en,\n"
        ",x@example.com,,\n"
    )
    problems = problems_of(engine, "customers", write(tmp_path, text))

    located = [(p.line, p.column, p.value) for p in problems]
    assert located == [
        (3, "email", "not-an-email"),
        (3, "locale", "de"),
        (3, "birth_date", "1990-02-30"),
        (5, "customer_id", ""),
    ]
    assert count(engine, Customer) == 0
    assert "4 problem(s)" in str(InputError(problems))


def test_both_money_columns_is_a_header_problem(engine: Engine, tmp_path: Path) -> None:
    path = write(tmp_path, "order_id,customer_id,placed_at,amount,amount_cents\n")
    [problem] = problems_of(engine, "orders", path)
    assert (problem.line, problem.column) == (1, "amount_cents")
    assert "not both" in problem.message


def test_a_row_with_too_many_values(engine: Engine, tmp_path: Path) -> None:
    path = write(tmp_path, "customer_id,first_name\nC-1,Anna,Rossi\n")
    [problem] = problems_of(engine, "customers", path)
    assert (problem.line, problem.value) == (2, "Rossi")
    assert "3 values but the header has 2 columns" in problem.message


def test_non_utf8_file(engine: Engine, tmp_path: Path) -> None:
    text = "customer_id,first_name\nC-1,Anna\nC-2,Niccolò\n"
    path = write(tmp_path, text, encoding="latin-1")

    [problem] = problems_of(engine, "customers", path)

    assert (problem.source, problem.line) == (str(path), 3)
    assert "not UTF-8" in problem.message
    assert problem.value is not None and "Niccol" in problem.value
    assert count(engine, Customer) == 0


def test_utf16_file(engine: Engine, tmp_path: Path) -> None:
    path = write(tmp_path, "\ufeffcustomer_id\nC-1\n", encoding="utf-16-le")
    [problem] = problems_of(engine, "customers", path)
    assert "UTF-16" in problem.message


def test_utf8_with_bom_is_accepted(engine: Engine, tmp_path: Path) -> None:
    path = write(tmp_path, "\ufeffcustomer_id,first_name\nC-1,Niccolò\n")
    report = import_csv(engine, "customers", path)
    assert report.inserted == 1
    assert rows_by_key(engine, Customer)["C-1"].first_name == "Niccolò"


@pytest.mark.parametrize("text", ["", "\n\n", "\ufeff"])
def test_empty_file(engine: Engine, tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text, "empty.csv")
    [problem] = problems_of(engine, "orders", path)
    assert problem.source == str(path)
    assert "empty" in problem.message


def test_missing_file(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    [problem] = problems_of(engine, "orders", path)
    assert (problem.source, problem.message) == (str(path), "file not found")


def test_unclosed_quote(engine: Engine, tmp_path: Path) -> None:
    path = write(tmp_path, 'customer_id,first_name\nC-1,Anna\nC-2,"Bob\n')
    [problem] = problems_of(engine, "customers", path)
    assert problem.line == 3
    assert "quotes" in problem.message
    assert count(engine, Customer) == 0


def test_header_only_imports_nothing(engine: Engine, tmp_path: Path) -> None:
    report = import_csv(engine, "customers", write(tmp_path, "customer_id,email\n"))
    assert (report.rows_read, report.inserted) == (0, 0)


# ---------------------------------------------------------------------------- skipping


def test_skip_bad_rows_imports_the_good_ones(engine: Engine, tmp_path: Path) -> None:
    import_base(engine, tmp_path)
    text = (
        "order_id,customer_id,placed_at,amount\n"
        "O-1,C-1,2024-03-01,10\n"
        "O-2,C-1,yesterday,10\n"
        "O-3,C-404,2024-03-01,10\n"
        "O-4,C-2,2024-03-02,-1\n"
        "O-1,C-2,2024-03-03,10\n"
        "O-5,C-2,2024-03-04,10.10\n"
    )

    report = import_csv(engine, "orders", write(tmp_path, text), skip_bad_rows=True)

    assert (report.rows_read, report.inserted, report.skipped_rows) == (6, 2, 4)
    assert [(p.line, p.column) for p in report.skipped] == [
        (3, "placed_at"),
        (4, "customer_id"),
        (5, "amount"),
        (6, "order_id"),
    ]
    assert set(rows_by_key(engine, Order)) == {"O-1", "O-5"}
    assert "4 skipped" in report.summary()


def test_skip_bad_rows_skips_customers_whose_referrer_is_bad(
    engine: Engine, tmp_path: Path
) -> None:
    text = (
        "customer_id,email,referred_by\n"
        "C-1,a@example.com,C-2\n"  # refers to a bad row: skipped too
        "C-2,broken,\n"
        "C-3,c@example.com,C-4\n"  # C-3 and C-4 refer to each other: both fine
        "C-4,d@example.com,C-3\n"
        "C-5,e@example.com,C-6\n"  # C-6 is never found
    )

    report = import_csv(engine, "customers", write(tmp_path, text), skip_bad_rows=True)

    assert [(p.line, p.column, p.value) for p in report.skipped] == [
        (2, "referred_by", "C-2"),
        (3, "email", "broken"),
        (6, "referred_by", "C-6"),
    ]
    customers = rows_by_key(engine, Customer)
    assert set(customers) == {"C-3", "C-4"}
    assert customers["C-3"].referred_by_id == customers["C-4"].id
    assert customers["C-4"].referred_by_id == customers["C-3"].id
    assert report.inserted == 2


def test_a_customer_cannot_refer_themselves(engine: Engine, tmp_path: Path) -> None:
    [problem] = problems_of(
        engine, "customers", write(tmp_path, "customer_id,referred_by\nC-1,C-1\n")
    )
    assert (problem.line, problem.column, problem.value) == (2, "referred_by", "C-1")


# ---------------------------------------------------------------------------- file formats


def test_semicolons_and_decimal_commas(engine: Engine, tmp_path: Path) -> None:
    import_base(engine, tmp_path)
    text = (
        "order_id;customer_id;placed_at;amount\n"
        "O-1;C-1;2024-03-01;12,50\n"
        "O-2;C-1;2024-03-02;7.25\n"
        'O-3;C-2;2024-03-03;"1000,5"\n'
    )
    report = import_csv(engine, "orders", write(tmp_path, text))
    assert report.inserted == 3
    orders = rows_by_key(engine, Order)
    assert [orders[k].amount_cents for k in ("O-1", "O-2", "O-3")] == [1250, 725, 100050]

    customers = "customer_id;acquisition_cost\nC-7;3,10\n"
    import_csv(engine, "customers", write(tmp_path, customers, "customers.csv"))
    assert rows_by_key(engine, Customer)["C-7"].acquisition_cost_cents == 310


def test_decimal_comma_needs_semicolons(engine: Engine, tmp_path: Path) -> None:
    import_base(engine, tmp_path)
    text = 'order_id,customer_id,placed_at,amount\nO-1,C-1,2024-03-01,"12,50"\n'
    [problem] = problems_of(engine, "orders", write(tmp_path, text))
    assert (problem.line, problem.column, problem.value) == (2, "amount", "12,50")
    assert "';'-separated" in problem.message


def test_multiline_field_keeps_line_numbers(engine: Engine, tmp_path: Path) -> None:
    text = (
        "customer_id,first_name,email\n"
        'C-1,"Anna\nMaria\nLuisa",anna@example.com\n'  # lines 2-4
        "C-2,Bob,bob@example.com\n"  # line 5
        "\n"  # line 6: blank, ignored
        "C-3,Carla,not-an-email\n"  # line 7
    )
    [problem] = problems_of(engine, "customers", write(tmp_path, text))
    assert (problem.line, problem.column, problem.value) == (7, "email", "not-an-email")

    report = import_csv(engine, "customers", write(tmp_path, text), skip_bad_rows=True)
    assert report.rows_read == 3 and report.inserted == 2
    assert rows_by_key(engine, Customer)["C-1"].first_name == "Anna\nMaria\nLuisa"


def test_header_names_are_case_insensitive(engine: Engine, tmp_path: Path) -> None:
    text = "Customer_ID , Email\nC-1,a@example.com\n"
    assert import_csv(engine, "customers", write(tmp_path, text)).inserted == 1


def test_small_chunks_give_the_same_result(engine: Engine, tmp_path: Path) -> None:
    lines = ["customer_id,referred_by"]
    lines += [f"C-{i},{f'C-{i + 7}' if i % 3 == 0 else ''}" for i in range(1, 30)]
    lines += [f"C-{i}," for i in range(30, 40)]
    path = write(tmp_path, "\n".join(lines) + "\n")

    report = import_csv(engine, "customers", path, chunk_rows=4)

    assert (report.inserted, report.skipped) == (39, [])
    customers = rows_by_key(engine, Customer)
    assert customers["C-3"].referred_by_id == customers["C-10"].id
    again = import_csv(engine, "customers", path, chunk_rows=4)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 39)


# ---------------------------------------------------------------------------- a larger file


@pytest.mark.slow
def test_fifty_thousand_orders(engine: Engine, tmp_path: Path) -> None:
    customers = ["customer_id,email"] + [f"C-{i},c{i}@example.com" for i in range(5_000)]
    orders = ["order_id,customer_id,placed_at,amount,status"] + [
        f"O-{i},C-{i % 5_000},2024-{1 + i % 12:02d}-{1 + i % 28:02d}T12:{i % 60:02d}:00Z,"
        f"{i % 500}.{i % 100:02d},completed"
        for i in range(50_000)
    ]
    import_csv(engine, "customers", write(tmp_path, "\n".join(customers) + "\n", "c.csv"))
    path = write(tmp_path, "\n".join(orders) + "\n", "o.csv")

    started = time.perf_counter()
    report: ImportReport = import_csv(engine, "orders", path)
    first = time.perf_counter() - started
    started = time.perf_counter()
    again = import_csv(engine, "orders", path)
    second = time.perf_counter() - started

    print(
        f"\n{engine.dialect.name}: 50,000 orders imported in {first:.1f}s, re-import {second:.1f}s"
    )
    assert report.inserted == 50_000
    assert again.unchanged == 50_000
    assert count(engine, Order) == 50_000


def test_an_id_repeated_after_a_bad_row_is_reported_too(engine: Engine, tmp_path: Path) -> None:
    text = "customer_id,email\nC-1,broken\nC-2,b@example.com\nC-1,a@example.com\n"
    problems = problems_of(engine, "customers", write(tmp_path, text))
    assert [(p.line, p.column) for p in problems] == [(2, "email"), (4, "customer_id")]


ADDRESSES = [
    "anna.rossi@example.com",
    "Anna.Rossi@Example.COM",
    "a+tag@example.co.uk",
    "màrio@bücher.de",
    "mario@xn--bcher-kva.de",
    "user%host@example.com",
    "a..b@example.com",
    ".a@example.com",
    "a@exa_mple.com",
    "a@-example.com",
    "a@shop.test",
    "a@example",
    "a@[127.0.0.1]",
    '"john"@example.com',
    "a(b)@example.com",
    "x" * 250 + "@example.com",
]


@pytest.mark.parametrize("address", ADDRESSES)
def test_csv_and_campaign_files_share_one_email_rule(address: str) -> None:
    """An address is accepted by the import exactly when a campaign's ``EmailStr`` accepts
    it, and stored as the same normalised address, lower-cased."""
    from pydantic import EmailStr, TypeAdapter, ValidationError

    from ciclovita.ingest.csv_import.cells import CellError, Options, email

    try:
        expected: str | None = TypeAdapter(EmailStr).validate_python(address).lower()
    except ValidationError:
        expected = None
    try:
        imported: str | None = email(address, Options())
    except CellError:
        imported = None
    assert imported == expected
