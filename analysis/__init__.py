"""Analysis of run directories: plots, tables and reports (see README)."""
