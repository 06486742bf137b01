# Names vulture cannot see being used: Airflow, aiohttp, Python and our users call them by name.
#
# vulture reads this file as more source (pyproject.toml: [tool.vulture] paths); it is never imported
# or run. An attribute access below marks that name as used everywhere, so keep it to names that are
# truly called by name, each under the reason it is here. Dead code gets deleted, not listed.
# ruff: noqa
_: object

# --- Airflow, by name ----------------------------------------------------------------------------------
# Operators and sensors: the task runner and the DAG processor read these.
_.execute_complete  # the method_name of self.defer(...)
_.poke  # BaseSensorOperator
_.template_fields
_.template_ext
_.template_fields_renderers
_.operator_extra_links
_.ui_color
# Triggers and links.
_.serialize  # BaseTrigger: (classpath, kwargs)
_.get_link  # BaseOperatorLink.get_link(self, operator, *, ti_key)
_.operator  # ... whose positional `operator` argument the job link does not need
# Hooks: the connection form and the "Test" button.
_.conn_name_attr
_.conn_type
_.hook_name
_.get_connection_form_widgets  # Airflow 2.x
_.get_ui_field_behaviour
_.test_connection
# The provider entry point (pyproject.toml: [project.entry-points.apache_airflow_provider]).
_.get_provider_info

# --- Python, by name -----------------------------------------------------------------------------------
_.__getattr__  # module-level lazy attributes (PEP 562)
_.__signature__  # read by inspect.signature (hooks: a flow's signature without Flow[...])
_.__wrapped__  # read by inspect.unwrap and Sphinx
_.exc_info  # __exit__ / __aexit__ parameters fixed by the context-manager protocol
_.exc_type
_.tb

# --- Public data and API that only callers read ----------------------------------------------------------
# Fields of the Bulk API's JobInfo and OAuth token response, kept so callers see the whole answer.
_.content_url
_.external_id_field_name
_.is_pk_chunking_supported
_.token_type
# Enum members reached by value (IngestOperation("insert"), QueryOperation("queryAll")).
_.INSERT
_.QUERY_ALL
# Public hook API, documented in docs/operators.md and tested in tests/unit/hooks.
_.get_job_url

# --- The emulator's API for tests and users (docs/emulator.md; used by tests/ and scripts/) ---------------
_.ApiSession
_.connection_json
_.generate_jwt_keypair
_.start_emulator_process
_.expire_tokens
_.run_ingest
_.run_query
_.set_result_pages_shape  # EmulatorServer: documented shortcuts for update_settings(...), used by tests
_.set_query_timeout
_.result_record_count  # query_results.py: the row count of a stored result, which tests check against
# A column of the emulator's jobs table that uploads write; JobRecord mirrors every column (its fields
# build the SELECT), so the field stays even though nothing reads it back.
_.upload_bytes

# Public result and manifest fields: written to manifests with asdict() or read by callers and tests.
_.succeeded  # WaitOutcome.succeeded: used by scripts/_demo_run.py and the docs' examples
_.last_record_number  # CsvPart: the number of the part's last source record (public, tested)
_.reported_record_count  # PageEntry: the page's Sforce-NumberOfRecords, a manifest field
_.attempts  # PageEntry: downloads a page took, a manifest field
_.resumed_pages  # ExtractResult: pages kept from an earlier run (public result field)
_.bytes_stored  # ExtractResult: bytes stored (public result field)

# OpenLineage (operators/lineage.py): the OpenLineage provider calls these methods of the operators by name
# (its DefaultExtractor), and serializes the run facet's fields into the events (attrs fields).
_.get_openlineage_facets_on_start
_.get_openlineage_facets_on_complete
_.get_openlineage_facets_on_failure
_.jobIds  # SalesforceBulkJobsRunFacet: event fields, set by keyword
_.jobKind
_.apiVersion
