"""Pluggable backends: one small ABC per family (``base.py``), one file per implementation family."""
