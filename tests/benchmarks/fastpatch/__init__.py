"""Benchmark-only app: makes the engine build emails with FastEmailMultiAlternatives."""
