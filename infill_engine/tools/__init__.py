"""Measurements a user runs: `infill bench`, the hardware check, the concurrency table
and the live canvas view.
"""
