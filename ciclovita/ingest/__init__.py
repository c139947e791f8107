"""Data in: the demo data generator (``demo``) and CSV imports of customers, orders and events
(``csv_import``)."""
