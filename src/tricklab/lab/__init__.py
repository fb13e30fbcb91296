"""The lab: recipes, tasks, the runner, ablations into a SQLite store, statistics, reports and cards.

Nothing outside ``tricklab.cli`` imports from here; submodules are imported on use.
"""
