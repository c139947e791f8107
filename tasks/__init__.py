"""Prefect tasks: units of batch work (score, segment, plan, deliver). Thin: they call ciclovita."""
