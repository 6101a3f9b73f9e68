"""Scene detectors."""
