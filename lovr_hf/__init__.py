"""lovr_hf: build and evaluate LoVR-style long-video retrieval benchmarks as Hugging Face datasets."""

__version__ = "0.1.0"
