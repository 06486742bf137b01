"""Sensors that wait for Bulk API 2.0 jobs created elsewhere."""
