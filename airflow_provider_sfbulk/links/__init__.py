"""Operator extra links to the Bulk API 2.0 jobs in Salesforce Setup."""
