"""The campaign language: the YAML models (``spec``), durations, the catalogue that loads and
cross-checks every file, and the JSON Schema for editors. Planning (``ciclovita.planning``)
and authoring tools (``ciclovita.authoring``) build on it; it imports neither."""
