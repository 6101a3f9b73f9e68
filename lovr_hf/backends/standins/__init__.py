"""Labelled stand-in backends: the demo's describer and joiner, test doubles."""
