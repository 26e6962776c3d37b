"""Study configs: each module has `get_config(arg=None)` (variants by name, e.g. `file.py:quick`)."""
