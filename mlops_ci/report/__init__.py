"""Every rendering of results, one module per output: `terminal` (plain text), `markdown` (the
job summary, the pull-request report, convert.md; its Mermaid charts in `charts`), `json`,
`annotate` (error annotations on a runner) and `comment` (the sticky pull-request comment).
`escape` holds the one rule for each place where text from a pull request is shown; `results`
gathers the stage documents a report is made of; `units` formats numbers.

Import the submodule you need (`from mlops_ci.report import markdown`): this file imports
nothing, so reaching `report.escape` costs nothing.
"""
