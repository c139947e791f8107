"""Import a user's own customers, orders and events from CSV files.

``import_csv(engine, "orders", Path("orders.csv"))`` reads the file in chunks, checks every
row, and upserts the rows on their external id (``customer_id`` / ``order_id`` /
``event_id``), all in one transaction:

* every bad row is reported with its line, column and value; when any row is bad nothing is
  written and ``InputError`` lists every problem — unless ``skip_bad_rows``, which imports the
  good rows and lists the skipped ones in the report;
* importing the same file again inserts nothing: rows whose values did not change are counted
  as unchanged (and not written); rows whose values changed are updated;
* the delimiter is ',' or ';' (detected from the header); ';' files may use decimal commas.

Customers' ``referred_by`` may name a customer further down the file: rows whose referrer is
not in the database yet wait until it is written, and are reported when it never is.

One module per job, each depending only on those above it:

- ``cells``: reading one cell's text into a value (a parser per kind of value);
- ``columns``: the columns each kind accepts, their defaults, and reading the header;
- ``reader``: opening the file as UTF-8, the delimiter, and the records with their lines;
- ``rows``: records into rows, every problem located; ids repeated within a file;
- ``report``: what an import did (``ImportReport``);
- ``writers``: one writer per kind, comparing with the database and upserting;
- ``importer``: ``import_csv`` itself, all or nothing.
"""

from ciclovita.ingest.csv_import.importer import CHUNK_ROWS, import_csv
from ciclovita.ingest.csv_import.report import ImportReport

__all__ = ["CHUNK_ROWS", "ImportReport", "import_csv"]
