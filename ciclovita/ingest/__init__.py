"""Data in: the demo data generator and CSV imports of customers, orders and events."""
