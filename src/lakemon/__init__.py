"""lakemon: Spark-native monitoring for machine-learning models in production."""

from __future__ import annotations

__version__ = "0.1.0"
