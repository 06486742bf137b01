"""Random ``unprocessedrecords`` rows go into the retry file exactly, after the failed rows to retry.

``test_failed_rows.py`` checks random failed rows (quotes, line breaks, every delimiter, multibyte and
empty values) through the retry, kept and fix-and-reload outputs; this adds the unprocessed rows of a
job that failed part-way, in columns ordered differently from the failed file's, so that each must be
mapped by name.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_sfbulk.csvio.failed_rows import write_failed_rows
from airflow_provider_sfbulk.csvio.scanner import inspect_csv
from airflow_provider_sfbulk.protocol.states import COLUMN_DELIMITERS, LINE_ENDINGS

VALUES = st.lists(
    st.sampled_from(["a", " ", ",", ";", "|", "\t", "^", "`", '"', "\r", "\n", "\r\n", "é", "漢", "😀", ":"]),
    max_size=5,
).map("".join)


def _csv(rows: list[list[str]], char: str, terminator: str, *, quote_all: bool) -> bytes:
    """Rows as CSV; without ``quote_all``, only the values that need it are quoted (a lone CR too)."""

    def field(value: str, width: int) -> str:
        needs = quote_all or any(c in value for c in (char, '"', "\r", "\n")) or (width == 1 and not value)
        return '"' + value.replace('"', '""') + '"' if needs else value

    text = "".join(char.join(field(v, len(row)) for v in row) + terminator for row in rows)
    return text.encode("utf-8")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    delimiter=st.sampled_from(sorted(COLUMN_DELIMITERS)),
    line_ending=st.sampled_from(["LF", "CRLF"]),
    width=st.integers(min_value=1, max_value=3),
    data=st.data(),
)
def test_unprocessed_rows_round_trip_exactly(
    delimiter: str, line_ending: str, width: int, data: st.DataObject, tmp_path: Path
) -> None:
    char = COLUMN_DELIMITERS[delimiter]
    terminator = LINE_ENDINGS[line_ending]
    names = [f"F{i}__c" for i in range(width)]
    row = st.lists(VALUES, min_size=width, max_size=width)
    failed = data.draw(st.lists(row, max_size=6), label="failed")
    unprocessed = data.draw(st.lists(row, max_size=6), label="unprocessed")
    # Salesforce quotes every value of a result file; an unprocessed file is the upload as it was sent.
    failed_file = tmp_path / "failed.csv"
    failed_file.write_bytes(
        _csv(
            [["sf__Id", "sf__Error", *names], *(["", "UNABLE_TO_LOCK_ROW:busy:--", *v] for v in failed)],
            char, terminator, quote_all=True,
        )
    )
    reversed_names = names[::-1]
    unprocessed_file = tmp_path / "unprocessed.csv"
    unprocessed_file.write_bytes(
        _csv([reversed_names, *[values[::-1] for values in unprocessed]], char, terminator, quote_all=False)
    )
    retry = io.BytesIO()
    split = write_failed_rows(
        [(failed_file, {"UNABLE_TO_LOCK_ROW"})], kept_out=None, retry_out=retry,
        unprocessed_files=[unprocessed_file], delimiter=delimiter, line_ending=line_ending,
    )
    assert (split.retried, split.resubmitted, split.kept) == (len(failed), len(unprocessed), 0)
    expected = [*failed, *unprocessed]
    if not expected:
        assert retry.getvalue() == b""
        return
    rows = list(csv.reader(io.StringIO(retry.getvalue().decode("utf-8"), newline=""), delimiter=char))
    assert rows == [names, *expected]
    summary = inspect_csv(io.BytesIO(retry.getvalue()), column_delimiter=delimiter, line_ending=line_ending)
    assert summary.record_count == len(expected)
