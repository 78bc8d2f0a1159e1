"""Datasets: readers, synthetic generators, downloads, and the canonical volume step."""
