"""Thin AWS Lambda handlers over the churnops package."""
