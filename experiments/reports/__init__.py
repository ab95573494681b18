"""Leaf scripts that train (or read) runs and write a report: `python -m
experiments.reports.NAME`. Each imports the core (experiments.runs, reviews/, tasks/, ...) and
never another script here; what two of them share belongs in the core."""
