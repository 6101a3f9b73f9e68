"""Chat LLMs that merge captions."""
