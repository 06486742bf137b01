"""Operators of the Salesforce Bulk API 2.0 provider: ingest, query, results and job list."""
