"""`mlops-ci monitor`: staleness, data and prediction drift, and decay of every deployed model.

Modules: `stattests/` (one module per drift test, and the default choice), `counts` (streamed
per-column counts), `reader` (pyarrow datasets), `drift`, `staleness`, `decay`, `check` (one
model's verdict from the registry), `render` (text, JSON, Markdown), `issues` (one GitHub issue
per model) and `command` (what the CLI calls).
"""
