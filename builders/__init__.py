"""datasets builders (used programmatically: datasets 5 refuses loading scripts)."""
