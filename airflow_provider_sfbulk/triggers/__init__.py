"""The deferrable trigger that waits for Bulk API 2.0 jobs."""
