"""Joining the pages of a single-file extract (``query/extract.py``), called directly on stored parts.

The join drops every page's header line but the first one written, and refuses parts that do not hold
what the manifest says: a header dropped twice, or one kept twice, silently corrupts the one file a
downstream job reads.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_sfbulk.common.paths import to_storage_path
from airflow_provider_sfbulk.protocol.api import JobInfo
from airflow_provider_sfbulk.protocol.states import JobKind, JobState
from airflow_provider_sfbulk.query.errors import QueryExtractError
from airflow_provider_sfbulk.query.extract import _Extract
from airflow_provider_sfbulk.query.manifest import PARTS_FOLDER, PageEntry
from airflow_provider_sfbulk.query.options import ExtractOptions

HEADER = b'"Id","Name"\n'


def _extract(tmp_path: Path, pages: list[tuple[bytes, int, int]], **options: Any) -> _Extract:
    """An extract of job ``750Q`` whose parts are already stored: ``(bytes, records, header bytes)``."""
    job = JobInfo(id="750Q", kind=JobKind.QUERY, state=JobState.JOB_COMPLETE, operation="query")
    extract = _Extract(None, job, to_storage_path(tmp_path), ExtractOptions(output="single", **options))  # type: ignore[arg-type]
    (tmp_path / PARTS_FOLDER).mkdir(exist_ok=True)
    for index, (data, records, header_bytes) in enumerate(pages):
        name = f"{PARTS_FOLDER}/part-{index:05d}.csv"
        (tmp_path / name).write_bytes(data)
        extract.manifest.entries[index] = PageEntry(
            index, None, None, None, name, records, records, len(data), len(data), "00", header_bytes
        )
    return extract


def test_pages_are_joined_with_the_first_header_only(tmp_path: Path) -> None:
    pages = [
        (b"", 0, 0),  # an empty first page has no header: the next page's header is the file's
        (HEADER + b'"1","a"\n"2","b ""x"""\n', 2, len(HEADER)),
        (HEADER + b'"3","multi\nline"\n', 1, len(HEADER)),
        (b"", 0, 0),
    ]
    extract = _extract(tmp_path, pages)
    done = extract.join_pages()
    expected = HEADER + b'"1","a"\n"2","b ""x"""\n"3","multi\nline"\n'
    assert (tmp_path / "results.csv").read_bytes() == expected
    assert done == {
        "file": "results.csv",
        "bytes": len(expected),
        "sha256": hashlib.sha256(expected).hexdigest(),
        "record_count": 3,
    }


def test_a_part_shorter_than_its_header_is_refused(tmp_path: Path) -> None:
    pages = [(HEADER + b'"1","a"\n', 1, len(HEADER)), (HEADER[:5], 0, len(HEADER))]
    with pytest.raises(QueryExtractError) as caught:
        _extract(tmp_path, pages).join_pages()
    assert caught.value.job_id == "750Q"
    assert str(caught.value).startswith(f"part {PARTS_FOLDER}/part-00001.csv is shorter than its header")


def test_a_joined_count_that_differs_from_the_pages_is_refused(tmp_path: Path) -> None:
    pages = [(HEADER + b'"1","a"\n', 1, len(HEADER)), (HEADER + b'"2","b"\n"3","c"\n', 3, len(HEADER))]
    with pytest.raises(QueryExtractError) as caught:
        _extract(tmp_path, pages, file_name="accounts").join_pages()
    assert caught.value.job_id == "750Q"
    assert str(caught.value).startswith("accounts.csv holds 3 record(s) once joined, the pages 4")
