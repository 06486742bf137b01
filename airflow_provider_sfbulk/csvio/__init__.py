"""The CSV toolkit: one record-boundary scanner and validator, the split into upload parts, one
streaming record counter, and the failed-rows writer. Nothing here talks to Salesforce or Airflow."""
