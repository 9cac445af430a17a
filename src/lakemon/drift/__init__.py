"""Drift statistics computed on the driver from sketch summaries (pure numpy/scipy)."""
