"""Tracking and notification: MLflow, webhooks and Prometheus pushes of a monitor run."""
