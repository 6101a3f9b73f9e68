"""Embedders, one file per implementation, and the model families they serve."""
