"""Data path: Datum, databases, DataTransformer, prefetching (book 5.7-5.8)."""
