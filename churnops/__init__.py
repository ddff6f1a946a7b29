"""ChurnOps: an event-driven churn-prediction pipeline on AWS, and its local twin."""

__version__ = "0.1.0"
