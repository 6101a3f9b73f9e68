"""The offline end-to-end demo: synthetic sample videos and tiny local models."""
