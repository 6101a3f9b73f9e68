"""Captioners (vision-language models) and caption quality scorers."""
