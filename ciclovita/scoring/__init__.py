"""Scoring: per-customer facts from the database, RFM, value, stages, and their writes."""
