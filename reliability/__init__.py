"""The reliability suite of issue #10: faults, load, bad input, security, reconciliation.

Run it with ``make reliability`` (or ``.venv/bin/python -m reliability --help``).
"""
