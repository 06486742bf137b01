"""The ingest engine: a load's persisted state, the part lifecycle (create, upload, close, recover) and
result collection (download, reconcile, retry rounds, manifest), usable without Airflow's operators."""
