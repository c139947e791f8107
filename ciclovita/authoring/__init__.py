"""Tools for the people who write campaigns: ``validate`` (every problem in campaigns and
templates, with file and line), ``preview`` (real emails written to a folder), and the sample
recipients and trigger details both render with."""
