"""Retrain state machine task handlers."""
