"""Campaigns as code: the YAML language, the catalogue, the planner and its guards."""
