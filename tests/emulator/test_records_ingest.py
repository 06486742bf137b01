"""Row-level ingest processing against a temporary SQLite store (no HTTP)."""

from __future__ import annotations

import csv
import io
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from airflow_provider_sfbulk.emulator import identity
from airflow_provider_sfbulk.emulator.records import (
    BATCH_RETRIES,
    IngestFaults,
    IngestOutcome,
    IngestSpec,
    process_ingest,
    validate_upload_header,
)
from airflow_provider_sfbulk.emulator.schema import Schema, create_tables, load_schema
from airflow_provider_sfbulk.protocol.ids import is_valid_id
from airflow_provider_sfbulk.protocol.states import COLUMN_DELIMITERS, LINE_ENDINGS, JobState

SCHEMA = load_schema()


@dataclass
class Result:
    outcome: IngestOutcome
    texts: dict[str, str]
    delimiter: str

    def rows(self, name: str) -> list[list[str]]:
        reader = csv.reader(io.StringIO(self.texts[name], newline=""), delimiter=self.delimiter)
        return list(reader)[1:]

    @property
    def ok(self) -> list[list[str]]:
        return self.rows("successfulResults")

    @property
    def failed(self) -> list[list[str]]:
        return self.rows("failedResults")

    @property
    def unprocessed(self) -> list[list[str]]:
        return self.rows("unprocessedrecords")

    @property
    def errors(self) -> list[str]:
        return [row[1] for row in self.failed]


class Org:
    """A fresh emulator store plus a helper to run one ingest job."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = sqlite3.connect(path / "emulator.sqlite3", isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=OFF")  # tests need no durability; keeps setup fast
        self.schema: Schema = SCHEMA
        self.conn.execute("BEGIN")
        create_tables(self.conn, self.schema)
        identity.ensure_id_table(self.conn)
        self.conn.execute("COMMIT")
        self.jobs = 0

    def run(self, object_name: str, operation: str, data: str | bytes, *, external_id: str | None = None,
            delimiter: str = "COMMA", line_ending: str = "LF", **kwargs) -> Result:
        self.jobs += 1
        job_dir = self.path / f"job{self.jobs}"
        job_dir.mkdir()
        upload = job_dir / "upload.csv"
        upload.write_bytes(data.encode() if isinstance(data, str) else data)
        spec = IngestSpec(f"750job{self.jobs}", object_name, operation, external_id, delimiter, line_ending)
        outcome = process_ingest(self.conn, self.schema, spec, upload, job_dir, **kwargs)
        texts = {name: (job_dir / f"{name}.csv").read_bytes().decode()
                 for name in ("successfulResults", "failedResults", "unprocessedrecords")}
        return Result(outcome, texts, COLUMN_DELIMITERS[delimiter])

    def record(self, object_name: str, record_id: str) -> dict | None:
        cursor = self.conn.execute(f'SELECT * FROM "rec_{object_name}" WHERE "Id" = ?', (record_id,))
        row = cursor.fetchone()
        if row is None:
            return None
        return dict(zip([d[0] for d in cursor.description], row, strict=True))

    def count(self, object_name: str, where: str = "1") -> int:
        return self.conn.execute(f'SELECT COUNT(*) FROM "rec_{object_name}" WHERE {where}').fetchone()[0]

    def insert_accounts(self, *rows: str, header: str = "Name,External_Id__c") -> list[str]:
        result = self.run("Account", "insert", header + "\n" + "\n".join(rows) + "\n")
        assert not result.failed, result.failed
        return [row[0] for row in result.ok]


@pytest.fixture
def org(tmp_path: Path) -> Iterator[Org]:
    store = Org(tmp_path)
    yield store
    store.conn.close()


def check_counts(result: Result) -> None:
    outcome = result.outcome
    assert outcome.records_processed == len(result.ok) + len(result.failed)
    assert outcome.records_failed == len(result.failed)
    assert outcome.records_unprocessed == len(result.unprocessed)


# ---------------------------------------------------------------------------------------------- insert


def test_insert_stores_typed_values_and_system_fields(org: Org):
    result = org.run(
        "Account", "insert",
        "Name,NumberOfEmployees,AnnualRevenue,Active__c,Customer_Since__c,Rating,Description\n"
        "Acme,30,1234.565,TRUE,2020-02-29,Warm,\n",
    )
    assert result.outcome.state is JobState.JOB_COMPLETE
    check_counts(result)
    [[record_id, created, *values]] = result.ok
    assert created == "true"
    assert values == ["Acme", "30", "1234.565", "TRUE", "2020-02-29", "Warm", ""]
    assert is_valid_id(record_id)
    assert record_id.startswith("001")
    record = org.record("Account", record_id)
    assert record is not None
    assert record["NumberOfEmployees"] == 30
    assert record["AnnualRevenue"] == pytest.approx(1234.57)
    assert record["Active__c"] == 1
    assert record["Customer_Since__c"] == "2020-02-29"
    assert record["Description"] is None
    assert record["IsDeleted"] == 0
    assert record["CreatedById"] == identity.USER_ID
    assert record["LastModifiedById"] == identity.USER_ID
    assert record["CreatedDate"] == record["LastModifiedDate"] == record["SystemModstamp"]
    assert record["CreatedDate"].endswith("Z")


def test_insert_row_errors_and_results_layout(org: Org):
    result = org.run("Account", "insert", "Name,NumberOfEmployees\nGood,1\n,2\nBad,many\n")
    assert result.outcome.state is JobState.JOB_COMPLETE
    assert result.texts["failedResults"] == (
        '"sf__Id","sf__Error",Name,NumberOfEmployees\n'
        '"","REQUIRED_FIELD_MISSING:Required fields are missing: [Name]:Name --","","2"\n'
        '"","INVALID_TYPE_ON_FIELD_IN_RECORD:NumberOfEmployees: value not of required type: many:'
        'NumberOfEmployees --","Bad","many"\n'
    )
    assert result.texts["successfulResults"].startswith('"sf__Id","sf__Created",Name,NumberOfEmployees\n"001')
    assert result.texts["unprocessedrecords"] == "Name,NumberOfEmployees\n"
    check_counts(result)
    assert org.count("Account") == 1


def test_required_field_null_marker_and_missing_column(org: Org):
    result = org.run("Opportunity", "insert", "Name,StageName\n#N/A,Prospecting\nDeal,Prospecting\n")
    assert result.errors == [
        "REQUIRED_FIELD_MISSING:Required fields are missing: [Name, CloseDate]:Name,CloseDate --",
        "REQUIRED_FIELD_MISSING:Required fields are missing: [CloseDate]:CloseDate --",
    ]


def test_insert_with_id_value_and_read_only_field_are_row_errors(org: Org):
    [existing] = org.insert_accounts("A,A1")
    result = org.run("Account", "insert",
                     f"Id,Name,CreatedDate\n{existing},X,\n,Y,2020-01-01T00:00:00Z\n,Z,\n")
    assert result.errors == [
        "INVALID_FIELD_FOR_INSERT_UPDATE:cannot specify Id in an insert call:Id --",
        "INVALID_FIELD_FOR_INSERT_UPDATE:Unable to create/update fields: CreatedDate. Please check the "
        "security settings of this field and verify that it is read/write for your profile or permission "
        "set.:CreatedDate --",
    ]
    assert [row[2] for row in result.ok] == ["", ]
    assert [row[3] for row in result.ok] == ["Z"]


def test_header_names_match_case_insensitively_and_echo_as_uploaded(org: Org):
    result = org.run("Account", "insert", '"NAME","external_id__C"\nAcme,E-1\n')
    assert result.texts["successfulResults"].splitlines()[0] == (
        '"sf__Id","sf__Created","NAME","external_id__C"')
    record = org.record("Account", result.ok[0][0])
    assert record is not None
    assert record["External_Id__c"] == "E-1"


def test_column_count_mismatch_is_a_row_error(org: Org):
    result = org.run("Account", "insert", "Name,Phone,Website\nA,1,w\nB,2\n")
    assert result.failed == [
        ["", "INVALID_FIELD:Number of fields in header is different from the row. header = 3 row = 2:--",
         "", "", ""]
    ]
    assert len(result.ok) == 1


# ---------------------------------------------------------------------------------------------- header


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("Name,Foo__c", "InvalidBatch : Field name not found : Foo__c"),
        ("Name,Nope.External_Id__c", "InvalidBatch : Field name not found : Nope.External_Id__c"),
        ("Name,Parent.Foo", "InvalidBatch : Field name not found : Parent.Foo"),
        ("Name,Parent.Name", "InvalidBatch : Field name provided, Name does not match an External ID, "
                             "Salesforce Id, or indexed field for Account"),
        ("Name,name", "InvalidBatch : Duplicate field name: name"),
    ],
)
def test_header_failures_fail_the_job_with_every_row_unprocessed(org: Org, header: str, message: str):
    data = f"{header}\nA,B\nC,D\n"
    result = org.run("Account", "insert", data)
    assert result.outcome.state is JobState.FAILED
    assert result.outcome.error_message == message
    assert result.unprocessed == [["A", "B"], ["C", "D"]]
    assert result.texts["unprocessedrecords"].startswith(header + "\n")
    assert result.texts["successfulResults"] == f'"sf__Id","sf__Created",{header}\n'
    assert result.texts["failedResults"] == f'"sf__Id","sf__Error",{header}\n'
    check_counts(result)
    assert org.count("Account") == 0
    spec = IngestSpec("750x", "Account", "insert", None)
    path = org.path / "h.csv"
    path.write_text(data)
    assert validate_upload_header(org.schema, spec, path) == message


def test_validate_upload_header_accepts_good_header(org: Org):
    path = org.path / "h.csv"
    path.write_text("LastName,Account.External_Id__c,ReportsTo.Email\nx,y,z\n")
    assert validate_upload_header(org.schema, IngestSpec("750x", "Contact", "insert", None), path) is None


def test_upsert_on_a_field_that_is_not_an_external_id_fails_the_job(org: Org):
    result = org.run("Account", "upsert", "Name\nA\n", external_id="Name")
    assert result.outcome.state is JobState.FAILED
    assert result.outcome.error_message == (
        "InvalidJob : Field name provided, Name does not match an External ID, Salesforce Id, or indexed "
        "field for Account"
    )


def test_empty_upload_fails(org: Org):
    result = org.run("Account", "insert", "")
    assert result.outcome.state is JobState.FAILED
    assert result.outcome.error_message == "InvalidBatch : The CSV file is empty"
    assert result.texts["unprocessedrecords"] == ""


# ---------------------------------------------------------------------------------------------- update


def test_update_ignores_blanks_and_nulls_with_marker(org: Org):
    [acc] = org.insert_accounts("Acme,E1,Austin", header="Name,External_Id__c,BillingCity")
    before = org.record("Account", acc)
    assert before is not None
    result = org.run("Account", "update", f"Id,Name,BillingCity,External_Id__c\n{acc[:15]},,#N/A,E2\n")
    assert result.outcome.state is JobState.JOB_COMPLETE
    assert result.ok == [[acc, "false", acc[:15], "", "#N/A", "E2"]]
    after = org.record("Account", acc)
    assert after is not None
    assert after["Name"] == "Acme"
    assert after["BillingCity"] is None
    assert after["External_Id__c"] == "E2"
    assert after["CreatedDate"] == before["CreatedDate"]
    assert after["LastModifiedDate"] >= before["LastModifiedDate"]


def test_update_errors(org: Org):
    acc, gone = org.insert_accounts("A,E1", "B,E2")
    org.run("Account", "delete", f"Id\n{gone}\n")
    missing = acc[:9] + "zzzzzz"
    contact_like = "003" + acc[3:15]
    result = org.run(
        "Account", "update",
        f"Id,Name\n,x\nnot-an-id,x\n{contact_like},x\n{missing},x\n{gone},x\n{acc},#N/A\n",
    )
    assert result.errors == [
        "MISSING_ARGUMENT:Id not specified in an update call:--",
        "MALFORMED_ID:Account ID: id value of incorrect type: not-an-id:Id --",
        f"MALFORMED_ID:Account ID: id value of incorrect type: {contact_like}:Id --",
        "INVALID_CROSS_REFERENCE_KEY:invalid cross reference id:--",
        "ENTITY_IS_DELETED:entity is deleted:--",
        "REQUIRED_FIELD_MISSING:Required fields are missing: [Name]:Name --",
    ]
    assert result.failed[-1][0] == acc  # the record was found, so its id is reported
    assert result.failed[0][0] == ""
    assert result.ok == []


def test_update_same_id_twice_in_one_batch_fails_both_but_not_across_batches(org: Org):
    [acc] = org.insert_accounts("A,E1")
    data = f"Id,Name\n{acc},First\n{acc},Second\n"
    result = org.run("Account", "update", data)
    assert result.errors == [f"DUPLICATE_VALUE:Duplicate id specified: {acc}:--"] * 2
    result = org.run("Account", "update", data, batch_size=1)
    assert len(result.ok) == 2
    assert org.record("Account", acc)["Name"] == "Second"  # type: ignore[index]


# ---------------------------------------------------------------------------------------------- upsert


def test_upsert_inserts_updates_and_rejects_duplicates(org: Org):
    (acc,) = org.insert_accounts("Old,K1")
    result = org.run(
        "Account", "upsert", "External_Id__c,Name\nK1,Renamed\nK2,New\nK3,Twice\nK3,Again\n,Blank\n",
        external_id="External_Id__c",
    )
    assert result.outcome.state is JobState.JOB_COMPLETE
    assert [row[:2] for row in result.ok][0] == [acc, "false"]
    assert result.ok[1][1] == "true"
    assert result.errors == [
        "DUPLICATE_VALUE:Duplicate external id specified: K3:External_Id__c --",
        "DUPLICATE_VALUE:Duplicate external id specified: K3:External_Id__c --",
        "MISSING_ARGUMENT:External_Id__c not specified:--",
    ]
    assert org.record("Account", acc)["Name"] == "Renamed"  # type: ignore[index]
    failed_update = org.run("Account", "upsert", "External_Id__c,Name\nK1,#N/A\n",
                            external_id="External_Id__c")
    assert failed_update.failed[0][:2] == [
        acc, "REQUIRED_FIELD_MISSING:Required fields are missing: [Name]:Name --"]
    new = org.record("Account", result.ok[1][0])
    assert new is not None
    assert new["External_Id__c"] == "K2"
    assert new["Name"] == "New"
    check_counts(result)


def test_upsert_insert_needs_required_fields(org: Org):
    org.insert_accounts("Old,K1")
    result = org.run("Account", "upsert", "External_Id__c,BillingCity\nK1,Oslo\nK9,Oslo\n",
                     external_id="External_Id__c")
    assert len(result.ok) == 1
    assert result.errors == ["REQUIRED_FIELD_MISSING:Required fields are missing: [Name]:Name --"]


def test_upsert_matching_several_records_fails_duplicate_external_id(org: Org):
    created = org.run("Contact", "insert", "LastName,Email\nA,same@example.com\nB,same@example.com\n")
    ids = sorted(row[0] for row in created.ok)
    result = org.run("Contact", "upsert", "Email,LastName\nsame@example.com,C\n", external_id="Email")
    assert result.errors == [
        "DUPLICATE_EXTERNAL_ID:Email: more than one record found for external id field: "
        f"[{ids[0]}, {ids[1]}]:--"
    ]


def test_upsert_on_id(org: Org):
    [acc] = org.insert_accounts("A,E1")
    result = org.run("Account", "upsert", f"Id,Name\n{acc},B\n,C\n", external_id="Id")
    assert [row[:2] for row in result.ok][0] == [acc, "false"]
    assert result.ok[1][1] == "true"
    assert org.count("Account") == 2


def test_upsert_does_not_match_deleted_records(org: Org):
    [acc] = org.insert_accounts("A,K1")
    org.run("Account", "delete", f"Id\n{acc}\n")
    result = org.run("Account", "upsert", "External_Id__c,Name\nK1,Again\n", external_id="External_Id__c")
    assert result.ok[0][1] == "true"
    assert result.ok[0][0] != acc


# ---------------------------------------------------------------------------------------- delete


def test_soft_delete_and_hard_delete(org: Org):
    a, b, c = org.insert_accounts("A,E1", "B,E2", "C,E3")
    result = org.run("Account", "delete", f"Id\n{a}\n{b}\n")
    assert [row[:2] for row in result.ok] == [[a, "false"], [b, "false"]]
    assert org.record("Account", a)["IsDeleted"] == 1  # type: ignore[index]
    assert org.count("Account", '"IsDeleted" = 0') == 1
    again = org.run("Account", "delete", f"Id\n{a}\n")
    assert again.errors == ["ENTITY_IS_DELETED:entity is deleted:--"]
    hard = org.run("Account", "hardDelete", f"Id\n{b}\n{c}\n{a[:10]}\n")
    assert [row[0] for row in hard.ok] == [b, c]
    assert hard.errors == [f"MALFORMED_ID:Account ID: id value of incorrect type: {a[:10]}:Id --"]
    assert org.record("Account", b) is None
    assert org.record("Account", c) is None
    assert org.count("Account") == 1


def test_delete_without_id_column(org: Org):
    result = org.run("Account", "delete", "Name\nA\n")
    assert result.errors == ["MISSING_ARGUMENT:Id not specified in a delete call:--"]


# ---------------------------------------------------------------------------------------- references


def test_parent_reference_by_external_id(org: Org):
    [parent, deleted] = org.insert_accounts("P,P-1", "D,P-2")
    org.run("Account", "delete", f"Id\n{deleted}\n")
    result = org.run("Contact", "insert", "LastName,account.External_Id__c\nA,P-1\nB,P-404\nC,P-2\nD,\n")
    assert result.errors == [
        "INVALID_FIELD:Foreign key external ID: P-404 not found for field External_Id__c in entity "
        "Account:--",
        "INVALID_FIELD:Foreign key external ID: P-2 not found for field External_Id__c in entity Account:--",
    ]
    by_name = {row[2]: row[0] for row in result.ok}
    assert org.record("Contact", by_name["A"])["AccountId"] == parent  # type: ignore[index]
    assert org.record("Contact", by_name["D"])["AccountId"] is None  # type: ignore[index]


def test_custom_relationship_reference_by_external_id(org: Org):
    [parent] = org.insert_accounts("P,CUST-1")
    result = org.run("Invoice__c", "insert",
                     "Invoice_Number__c,Amount__c,Account__r.External_Id__c\nINV-1,10.5,CUST-1\n")
    assert result.failed == []
    assert org.record("Invoice__c", result.ok[0][0])["Account__c"] == parent  # type: ignore[index]


def test_reference_ids_must_exist_and_be_live(org: Org):
    [live, gone] = org.insert_accounts("L,L1", "G,G1")
    org.run("Account", "delete", f"Id\n{gone}\n")
    never = live[:9] + "zzzzzz"
    result = org.run(
        "Contact", "insert", f"LastName,AccountId\nA,{live[:15]}\nB,{never}\nC,{gone}\nD,003{live[3:15]}\n"
    )
    assert result.errors == [
        "INVALID_CROSS_REFERENCE_KEY:invalid cross reference id:--",
        "ENTITY_IS_DELETED:entity is deleted:--",
        f"FIELD_INTEGRITY_EXCEPTION:AccountId: id value of incorrect type: 003{live[3:15]}:AccountId --",
    ]
    assert org.record("Contact", result.ok[0][0])["AccountId"] == live  # type: ignore[index]


def test_null_marker_clears_a_reference_on_update(org: Org):
    [parent] = org.insert_accounts("P,P1")
    contact = org.run("Contact", "insert", f"LastName,AccountId\nA,{parent}\n").ok[0][0]
    org.run("Contact", "update", f"Id,Account.External_Id__c\n{contact},#N/A\n")
    assert org.record("Contact", contact)["AccountId"] is None  # type: ignore[index]


# ---------------------------------------------------------------------------------------- unique values


def test_unique_values_against_store_and_within_batch(org: Org):
    [holder] = org.insert_accounts("Holder,U-1")
    result = org.run("Account", "insert", "Name,External_Id__c\nA,U-1\nB,U-2\nC,U-2\n")
    assert result.errors == [
        "DUPLICATE_VALUE:duplicate value found: External_Id__c duplicates value on record with id: "
        f"{holder[:15]}:--",
        "DUPLICATE_VALUE:duplicate value found: <unknown> duplicates value on record with id: <unknown>:--",
    ]
    assert [row[2] for row in result.ok] == ["B"]


def test_unique_values_across_batches_of_one_job(org: Org):
    result = org.run("Account", "insert", "Name,External_Id__c\nA,U-1\nB,U-1\n", batch_size=1)
    first = result.ok[0][0]
    assert result.errors == [
        "DUPLICATE_VALUE:duplicate value found: External_Id__c duplicates value on record with id: "
        f"{first[:15]}:--"
    ]


def test_update_keeping_its_own_unique_value_is_fine(org: Org):
    [acc] = org.insert_accounts("A,U-1")
    result = org.run("Account", "update", f"Id,External_Id__c\n{acc},U-1\n")
    assert result.failed == []


# ---------------------------------------------------------------------------------------- batches, faults


def test_batches_commit_and_report_progress(org: Org):
    progress: list[tuple[int, int]] = []
    data = "Name,Phone\n" + "".join(f"N{i},{i}\n" for i in range(5)) + "\n"  # blank lines are no records
    result = org.run("Account", "insert", data.replace("N3", ""), batch_size=2,
                     on_progress=lambda p, f: progress.append((p, f)))
    assert progress == [(2, 0), (4, 1), (5, 1)]
    check_counts(result)


def test_lock_faults_fail_rows_deterministically_and_write_nothing(org: Org):
    data = "Name\n" + "".join(f"N{i}\n" for i in range(200))
    result = org.run("Account", "insert", data, faults=IngestFaults(lock_row_rate=0.3, seed=1))
    locked = {row[2] for row in result.failed}
    assert 30 < len(locked) < 90
    assert all(e.startswith("UNABLE_TO_LOCK_ROW:unable to obtain exclusive access to this record or 1 "
                            "records: ")
               and e.endswith(":--") for e in result.errors)
    assert org.count("Account") == 200 - len(locked)
    stored = {r[0] for r in org.conn.execute('SELECT "Name" FROM "rec_Account"')}
    assert not stored & locked
    org.run("Account", "hardDelete", "Id\n" + "".join(f"{row[0]}\n" for row in result.ok))

    def locked_rows(job_id: str, seed: int) -> set[str]:
        spec = IngestSpec(job_id, "Account", "insert", None)
        upload = org.path / f"{job_id}.csv"
        upload.write_text(data)
        process_ingest(org.conn, org.schema, spec, upload, org.path / job_id,
                       faults=IngestFaults(lock_row_rate=0.3, seed=seed))
        with open(org.path / job_id / "failedResults.csv", newline="") as handle:
            names = {row[2] for row in list(csv.reader(handle))[1:]}
        org.conn.execute('DELETE FROM "rec_Account"')
        return names

    assert locked_rows("750A", 5) == locked_rows("750A", 5)
    assert locked_rows("750A", 5) != locked_rows("750A", 6)


def test_full_lock_rate_fails_every_row_with_the_record_id(org: Org):
    [acc] = org.insert_accounts("A,E1")
    result = org.run("Account", "update", f"Id,Name\n{acc},B\n", faults=IngestFaults(lock_row_rate=1.0))
    assert result.errors == [
        f"UNABLE_TO_LOCK_ROW:unable to obtain exclusive access to this record or 1 records: {acc}:--"
    ]
    assert org.record("Account", acc)["Name"] == "A"  # type: ignore[index]


def test_failing_batch_fails_the_job_and_keeps_earlier_batches(org: Org):
    data = "Name\n" + "".join(f"N{i}\n" for i in range(7))
    result = org.run("Account", "insert", data, batch_size=2, faults=IngestFaults(failing_batch=2))
    outcome = result.outcome
    assert outcome.state is JobState.FAILED
    assert outcome.error_message == (
        f"InternalServerError : Failed to process batch 2 after {BATCH_RETRIES} retries")
    assert outcome.retries == BATCH_RETRIES
    assert [row[2] for row in result.ok] == ["N0", "N1"]
    assert result.unprocessed == [[f"N{i}"] for i in range(2, 7)]
    check_counts(result)
    assert org.count("Account") == 2


def test_abort_between_batches(org: Org):
    calls = {"n": 0}

    def should_abort() -> bool:
        calls["n"] += 1
        return calls["n"] > 2

    data = "Name\n" + "".join(f"N{i}\n" for i in range(10))
    result = org.run("Account", "insert", data, batch_size=3, should_abort=should_abort)
    assert result.outcome.state is JobState.ABORTED
    assert result.outcome.error_message is None
    assert len(result.ok) == 6
    assert result.unprocessed == [[f"N{i}"] for i in range(6, 10)]
    check_counts(result)


def test_abort_during_batch_delay_stops_the_job(org: Org):
    flag = {"abort": False}

    def progress(processed: int, failed: int) -> None:
        flag["abort"] = True

    data = "Name\n" + "".join(f"N{i}\n" for i in range(4))
    result = org.run("Account", "insert", data, batch_size=2, batch_delay=30.0,
                     should_abort=lambda: flag["abort"], on_progress=progress)
    assert result.outcome.state is JobState.ABORTED
    assert len(result.unprocessed) == 2


# ---------------------------------------------------------------------------------------- CSV dialect


def test_bom_is_stripped(org: Org):
    result = org.run("Account", "insert", b"\xef\xbb\xbfName\nAcme\n")
    assert result.outcome.state is JobState.JOB_COMPLETE
    assert result.texts["successfulResults"].splitlines()[0] == '"sf__Id","sf__Created",Name'


@pytest.mark.parametrize(
    ("line_ending", "data"),
    [("LF", "Name,BillingCity\r\nAcme,Oslo\r\nBeta,Rome\r\n"),
     ("CRLF", "Name,BillingCity\nAcme,Oslo\nBeta,Rome\n")],
)
def test_wrong_line_ending_fails_the_job(org: Org, line_ending: str, data: str):
    result = org.run("Account", "insert", data, line_ending=line_ending)
    assert result.outcome.state is JobState.FAILED
    assert result.outcome.error_message == (
        f"ClientInputError : LineEnding is invalid on user data. Current LineEnding setting is {line_ending}"
    )
    assert result.unprocessed == [["Acme", "Oslo"], ["Beta", "Rome"]]
    assert result.texts["unprocessedrecords"].startswith("Name,BillingCity" + LINE_ENDINGS[line_ending])
    check_counts(result)
    assert org.count("Account") == 0
    path = org.path / "h.csv"
    path.write_text(data, newline="")
    spec = IngestSpec("750x", "Account", "insert", None, "COMMA", line_ending)
    assert validate_upload_header(org.schema, spec, path) == result.outcome.error_message


def test_crlf_row_after_an_lf_header_keeps_carriage_return_in_last_value(org: Org):
    result = org.run("Account", "insert", "Name,BillingCity\nAcme,Oslo\r\n")
    assert result.outcome.state is JobState.JOB_COMPLETE
    record = org.record("Account", result.ok[0][0])
    assert record is not None
    assert record["Name"] == "Acme"
    assert record["BillingCity"] == "Oslo\r"


def test_crlf_job(org: Org):
    data = 'Name,Description\r\nAcme,"two\r\nlines"\r\nBare,one\nline\r\n'
    result = org.run("Account", "insert", data, line_ending="CRLF")
    assert result.outcome.state is JobState.JOB_COMPLETE
    assert result.texts["successfulResults"].endswith('"one\nline"\r\n')
    assert result.texts["successfulResults"].count("\r\n") == 4
    descriptions = [org.record("Account", row[0])["Description"] for row in result.ok]  # type: ignore[index]
    assert descriptions == ["two\r\nlines", "one\nline"]


@pytest.mark.parametrize("delimiter", sorted(COLUMN_DELIMITERS))
def test_delimiters_apply_to_results(org: Org, delimiter: str):
    d = COLUMN_DELIMITERS[delimiter]
    value = f'say "hi"{d} ok'
    quoted = '"' + value.replace('"', '""') + '"'
    result = org.run("Account", "insert", f"Name{d}BillingCity\nAcme{d}{quoted}\n", delimiter=delimiter)
    assert result.outcome.state is JobState.JOB_COMPLETE
    assert result.texts["successfulResults"].splitlines()[0] == (
        f'"sf__Id"{d}"sf__Created"{d}Name{d}BillingCity')
    assert result.ok[0][2:] == ["Acme", value]
    assert result.texts["successfulResults"].endswith(f'"Acme"{d}{quoted}\n')


def test_invalid_utf8_fails_before_any_row(org: Org):
    result = org.run("Account", "insert", b"Name\nGood\nBad\xff\nLater\n")
    assert result.outcome.state is JobState.FAILED
    assert result.outcome.error_message == (
        "InvalidBatch : Failed to parse CSV: invalid UTF-8 byte sequence on line 3")
    assert org.count("Account") == 0
    assert result.unprocessed == [["Good"]]
    check_counts(result)


def test_malformed_csv_fails_before_any_row(org: Org):
    result = org.run("Account", "insert", 'Name\nGood\n"Bad"x\n')
    assert result.outcome.state is JobState.FAILED
    assert (result.outcome.error_message or "").startswith("InvalidBatch : Failed to parse CSV:")
    assert org.count("Account") == 0


def test_private_use_character_round_trips(org: Org):
    value = "a\ue000r\ue000\ue000b\r"
    quoted = '"' + value + '"'
    result = org.run("Account", "insert", f"Name\n{quoted}\n")
    assert result.ok[0][2] == value
    assert org.record("Account", result.ok[0][0])["Name"] == value  # type: ignore[index]


def test_result_files_are_utf8_with_values_echoed(org: Org):
    result = org.run("Account", "insert", 'Name,Description\nZürich ☃,"multi\nline ""quoted"", text"\n')
    assert result.texts["successfulResults"].endswith('"Zürich ☃","multi\nline ""quoted"", text"\n')
    assert LINE_ENDINGS["LF"] == "\n"


def test_memory_does_not_grow_with_the_upload(org: Org):
    import tracemalloc

    def peak(rows: int) -> int:
        upload = org.path / f"big{rows}.csv"
        with open(upload, "w") as handle:
            handle.write("Name,Description\n")
            for i in range(rows):
                handle.write(f"N{i},{'x' * 200}\n")
        spec = IngestSpec(f"750mem{rows}", "Account", "insert", None)
        tracemalloc.start()
        try:
            outcome = process_ingest(org.conn, org.schema, spec, upload, org.path / f"mem{rows}",
                                     batch_size=250)
            peak_bytes = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert outcome.records_processed == rows
        return peak_bytes

    small, large = peak(1_000), peak(8_000)
    assert large < small * 1.5


def test_concurrent_jobs_on_separate_connections(org: Org):
    import threading

    org.conn.execute("PRAGMA journal_mode=WAL")
    outcomes: dict[str, IngestOutcome] = {}

    def job(name: str) -> None:
        conn = sqlite3.connect(org.path / "emulator.sqlite3", isolation_level=None, timeout=30)
        conn.execute("PRAGMA busy_timeout=30000")
        try:
            upload = org.path / f"{name}.csv"
            upload.write_text("Name,External_Id__c\n"
                              + "".join(f"{name}{i},{name}-{i}\n" for i in range(1500)))
            spec = IngestSpec(f"750{name}", "Account", "insert", None)
            outcomes[name] = process_ingest(conn, org.schema, spec, upload, org.path / name, batch_size=100)
        finally:
            conn.close()

    threads = [threading.Thread(target=job, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert {name: (o.state, o.records_processed, o.records_failed) for name, o in outcomes.items()} == {
        "a": (JobState.JOB_COMPLETE, 1500, 0), "b": (JobState.JOB_COMPLETE, 1500, 0)}
    assert org.conn.execute('SELECT COUNT(DISTINCT "Id") FROM "rec_Account"').fetchone()[0] == 3000
