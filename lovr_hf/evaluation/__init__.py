"""Stages captions/clips/videos -> embeddings -> rankings -> results: models, families, protocols, scoring."""
