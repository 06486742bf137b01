"""The CSV toolkit; nothing here talks to Salesforce.

One record-boundary scanner and validator, the split into upload parts, one streaming record counter,
and the failed-rows writer.

- :mod:`~airflow_provider_sfbulk.csvio.dialect`: delimiter and line-ending names, columns per operation;
- :mod:`~airflow_provider_sfbulk.csvio.errors`: :class:`CsvValidationError`, :class:`CsvShapeError`;
- :mod:`~airflow_provider_sfbulk.csvio.header`: header names and their checks;
- :mod:`~airflow_provider_sfbulk.csvio.scanner`: the scanner and validator, :func:`inspect_csv`;
- :mod:`~airflow_provider_sfbulk.csvio.split`: :func:`split_csv`, :func:`iter_csv_parts`;
- :mod:`~airflow_provider_sfbulk.csvio.tee`: :class:`CsvTee`, the streaming counter of downloads;
- :mod:`~airflow_provider_sfbulk.csvio.failed_rows`: :func:`write_failed_rows`.
"""
