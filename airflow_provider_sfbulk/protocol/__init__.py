"""The sans-IO Bulk API 2.0 protocol: requests, responses, auth, retries and one flow per endpoint."""
