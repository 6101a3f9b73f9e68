"""Decoding and cutting: probe, decode plans, prefetch, frames, scenes, clip files and their audio."""
