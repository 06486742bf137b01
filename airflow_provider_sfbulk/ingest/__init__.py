"""The ingest engine, usable without Airflow's operators.

A load's persisted state (``state``, ``journal``), its parameters (``spec``), the part data (``parts``),
the part lifecycle: create, upload, close, recover (``loader``), result collection: download,
reconcile, retry rounds, manifest (``collect``), checks before any job (``preflight``), orphan jobs of
lost create answers (``orphans``), what to do with an earlier attempt's load (``earlier``), and the
driver that strings them together (``load``).
"""
