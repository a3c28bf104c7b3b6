"""Segmentation: one pure function from a customer's data to explained tags (docs/segments.md)."""
