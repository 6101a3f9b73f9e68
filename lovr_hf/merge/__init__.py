"""Stage clip_captions -> clusters -> video_captions: an LLM merges captions."""
