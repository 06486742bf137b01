"""Property tests: any text value survives upload, storage and the result files exactly."""

from __future__ import annotations

import csv
import io
import sqlite3
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_sfbulk.emulator import identity
from airflow_provider_sfbulk.emulator.records import IngestSpec, process_ingest
from airflow_provider_sfbulk.emulator.schema import create_tables, load_schema
from airflow_provider_sfbulk.protocol.states import COLUMN_DELIMITERS, LINE_ENDINGS, JobState

SCHEMA = load_schema()

# Any character but NUL (which the csv module refuses); line breaks, quotes, delimiters and the private-use
# escape character are all included on purpose.
_CHARS = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
_SPECIAL = st.sampled_from(['"', ",", "\t", "|", ";", "^", "`", "\r", "\n", "\r\n", "\ue000", "#N/A", " "])
_VALUE = st.lists(st.one_of(st.text(_CHARS, max_size=5), _SPECIAL), max_size=6).map("".join)


def _quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    names=st.lists(_VALUE.filter(lambda v: v not in ("", "#N/A") and len(v) <= 255), min_size=1, max_size=4),
    descriptions=st.lists(_VALUE, min_size=4, max_size=4),
    delimiter=st.sampled_from(sorted(COLUMN_DELIMITERS)),
    line_ending=st.sampled_from(sorted(LINE_ENDINGS)),
)
def test_values_round_trip_exactly(tmp_path: Path, names, descriptions, delimiter, line_ending):
    d, eol = COLUMN_DELIMITERS[delimiter], LINE_ENDINGS[line_ending]
    workdir = Path(tmp_path) / f"run{abs(hash((tuple(names), tuple(descriptions), delimiter, line_ending)))}"
    workdir.mkdir(exist_ok=True)
    conn = sqlite3.connect(workdir / "db.sqlite3", isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("BEGIN")
        create_tables(conn, SCHEMA)
        identity.ensure_id_table(conn)
        conn.execute("COMMIT")
        rows = list(zip(names, descriptions, strict=False))
        upload = workdir / "upload.csv"
        upload.write_bytes(
            (f"Name{d}Description{eol}"
             + "".join(f"{_quote(n)}{d}{_quote(x)}{eol}" for n, x in rows)).encode()
        )
        spec = IngestSpec("750rt", "Account", "insert", None, delimiter, line_ending)
        outcome = process_ingest(conn, SCHEMA, spec, upload, workdir, batch_size=3)
        assert outcome.state is JobState.JOB_COMPLETE
        text = (workdir / "successfulResults.csv").read_bytes().decode()
        assert text.startswith(f'"sf__Id"{d}"sf__Created"{d}Name{d}Description{eol}')
        assert text.endswith(eol)
        parsed = list(csv.reader(io.StringIO(text, newline=""), delimiter=d))[1:]
        assert [(row[2], row[3]) for row in parsed] == rows
        for row, (name, description) in zip(parsed, rows, strict=True):
            assert _quote(name) + d + _quote(description) + eol in text
            stored = conn.execute('SELECT "Name", "Description" FROM "rec_Account" WHERE "Id" = ?',
                                  (row[0],)).fetchone()
            expected_description = None if description in ("", "#N/A") else description
            assert stored == (name, expected_description)
    finally:
        conn.close()
