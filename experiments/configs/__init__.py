"""Study configs: each module has `get_config(arg=None)` (variants by name, e.g. `file.py:quick`) and,
for `python -m experiments.sweep`, `get_sweep(arg=None)`: the list of per-trial overrides."""
