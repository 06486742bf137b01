"""The clients of the side-by-side benchmark, one per child process (run by ``side_by_side.py``).

``python side_by_side_clients.py CLIENT CASE SETTINGS_JSON`` runs one client on one case against a running
emulator and prints one ``RESULT=`` line of JSON (what it delivered, where the files are). The parent
measures the child from the outside (``os.wait4``): wall, user + system CPU and peak RSS.

Clients:

- ``raw``: the floor. Plain ``requests`` calls, nothing else: the same bytes in jobs of at most
  100,000,000 bytes cut at record boundaries (quote parity, counted by ``bytes.count``), each part streamed
  from the file, a fixed 1 s poll, every result streamed to a file in 1 MiB chunks.
- ``raw_parallel`` (query only): the same, with the ``resultPages`` URLs downloaded by 4 threads.
- ``ssf``: simple-salesforce's ``bulk2`` API with its defaults (``insert(csv_file=...)``,
  ``get_*_records(file=...)``, ``download(...)``), authenticated with the token the other clients get.
- ``ours``: the real operator (``SalesforceBulkIngestOperator`` / ``SalesforceBulkQueryOperator``,
  ``deferrable=False``), called through ``execute`` with a minimal context (a task instance stand-in
  that keeps XCom in memory): the whole task (validation, split, upload, wait, downloads, counting,
  manifest) runs in this process, with Airflow imported.

Imports are made inside each client so that the raw client's memory is not charged with Airflow's.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

API = "v60.0"
#: Largest upload per job for the raw floor (what the operator's ``max_bytes_per_job`` defaults to).
RAW_JOB_BYTES = 100_000_000
BLOCK = 1 << 20
TERMINAL = ("JobComplete", "Failed", "Aborted")


# --- raw floor --------------------------------------------------------------------------------------------


def _raw_session(settings: dict[str, Any]) -> tuple[Any, str]:
    import requests

    session = requests.Session()
    session.verify = settings["ca"] or True
    form = {
        "grant_type": "password", "client_id": settings["client_id"],
        "client_secret": settings["client_secret"], "username": settings["username"],
        "password": settings["password"] + settings["security_token"],
    }
    token = session.post(settings["base_url"] + "/services/oauth2/token", data=form, timeout=60)
    token.raise_for_status()
    body = token.json()
    session.headers["Authorization"] = "Bearer " + body["access_token"]
    return session, f"{body['instance_url']}/services/data/{API}"


def record_boundaries(path: str, limit: int) -> list[tuple[int, int]]:
    """(start, end) byte ranges of the data rows, each under ``limit`` with the header, cut between records.

    A newline ends a record when an even number of quotes precedes it since the last boundary.
    """
    parts = []
    with open(path, "rb") as handle:
        header = handle.readline()
        size = os.fstat(handle.fileno()).st_size
        start = len(header)
        while size - start + len(header) > limit:
            last = start + limit - len(header)
            position, quotes = start, 0
            handle.seek(start)
            while position + BLOCK < last:
                quotes += handle.read(BLOCK).count(b'"')
                position += BLOCK
            block = handle.read(last - position)
            cut = len(block)
            while True:
                cut = block.rfind(b"\n", 0, cut)
                if cut < 0:
                    raise ValueError(f"no record boundary in the last MiB before byte {last}")
                if (quotes + block.count(b'"', 0, cut)) % 2 == 0:
                    break
            parts.append((start, position + cut + 1))
            start = position + cut + 1
        parts.append((start, size))
    return parts


class _Part:
    """A file-like upload body: the header, then bytes ``start:end`` of the file, read as requested."""

    def __init__(self, path: str, header: bytes, start: int, end: int) -> None:
        self.handle = open(path, "rb")  # noqa: SIM115 - closed by close()
        self.handle.seek(start)
        self.pending = header
        self.left = end - start
        self.length = len(header) + self.left

    def __len__(self) -> int:
        return self.length

    def read(self, size: int = -1) -> bytes:
        size = self.length if size < 0 else size
        head, self.pending = self.pending[:size], self.pending[size:]
        data = self.handle.read(min(size - len(head), self.left)) if size > len(head) else b""
        self.left -= len(data)
        return head + data

    def close(self) -> None:
        self.handle.close()


def _stream_to(session: Any, url: str, target: Path, **kwargs: Any) -> Any:
    with session.get(url, stream=True, timeout=600, **kwargs) as response:
        response.raise_for_status()
        with target.open("wb") as out:
            for chunk in response.iter_content(BLOCK):
                out.write(chunk)
        return response.headers


def _wait(session: Any, urls: list[str], interval: float) -> list[dict[str, Any]]:
    infos: dict[str, dict[str, Any]] = {}
    while len(infos) < len(urls):
        time.sleep(interval)
        for url in urls:
            if url not in infos:
                info = session.get(url, timeout=60).json()
                if info["state"] in TERMINAL:
                    infos[url] = info
    return [infos[url] for url in urls]


def raw_ingest(settings: dict[str, Any], out: Path) -> dict[str, Any]:
    session, api = _raw_session(settings)
    source = settings["source"]
    with open(source, "rb") as handle:
        header = handle.readline()
    jobs = []
    for start, end in record_boundaries(source, RAW_JOB_BYTES):
        job = {"object": "Account", "operation": "insert", "contentType": "CSV", "lineEnding": "LF",
               "columnDelimiter": "COMMA"}
        created = session.post(f"{api}/jobs/ingest", json=job, timeout=60)
        created.raise_for_status()
        job_url = f"{api}/jobs/ingest/{created.json()['id']}"
        body = _Part(source, header, start, end)
        try:
            session.put(f"{job_url}/batches", data=body, headers={"Content-Type": "text/csv"},
                        timeout=600).raise_for_status()
        finally:
            body.close()
        session.patch(job_url, json={"state": "UploadComplete"}, timeout=60).raise_for_status()
        jobs.append(job_url)
    infos = _wait(session, jobs, 1.0)
    files: dict[str, list[str]] = {"successful": [], "failed": [], "unprocessed": []}
    for index, job_url in enumerate(jobs):
        for kind, resource in (("successful", "successfulResults"), ("failed", "failedResults"),
                               ("unprocessed", "unprocessedrecords")):
            target = out / f"{index}-{kind}.csv"
            _stream_to(session, f"{job_url}/{resource}", target)
            files[kind].append(str(target))
    return {"jobs": len(jobs), "states": [info["state"] for info in infos], "files": files,
            "processed": sum(int(info["numberRecordsProcessed"]) for info in infos),
            "failed": sum(int(info["numberRecordsFailed"]) for info in infos)}


def _raw_query_job(session: Any, api: str, soql: str) -> str:
    created = session.post(f"{api}/jobs/query", json={"operation": "query", "query": soql}, timeout=60)
    created.raise_for_status()
    job_url = f"{api}/jobs/query/{created.json()['id']}"
    (info,) = _wait(session, [job_url], 1.0)
    if info["state"] != "JobComplete":
        raise RuntimeError(f"query job ended {info['state']}")
    return job_url


def raw_query(settings: dict[str, Any], out: Path) -> dict[str, Any]:
    """The ``Sforce-Locator`` chain, one page after the other, each streamed to its file."""
    session, api = _raw_session(settings)
    job_url = _raw_query_job(session, api, settings["soql"])
    files, records, locator = [], 0, None
    while True:
        params: dict[str, Any] = {"maxRecords": settings["page_rows"]}
        if locator:
            params["locator"] = locator
        target = out / f"page-{len(files)}.csv"
        headers = _stream_to(session, f"{job_url}/results", target, params=params)
        files.append(str(target))
        records += int(headers["Sforce-NumberOfRecords"])
        locator = headers.get("Sforce-Locator")
        if not locator or locator == "null":
            break
    return {"pages": len(files), "records": records, "files": {"successful": files}}


def raw_parallel_query(settings: dict[str, Any], out: Path) -> dict[str, Any]:
    """``resultPages``: every page URL listed first, then downloaded by 4 threads (one session each)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    session, api = _raw_session(settings)
    job_url = _raw_query_job(session, api, settings["soql"])
    root = api.split("/services/data/")[0]
    urls: list[str] = []
    listing: str | None = f"{job_url}/resultPages?maxRecords={settings['page_rows']}"
    while listing:
        answer = session.get(listing, timeout=60).json()
        urls += [root + page["resultUrl"] for page in answer["resultPages"]]
        listing = None if answer.get("done", True) or not answer.get("nextRecordsUrl") else (
            root + answer["nextRecordsUrl"])
    local = threading.local()

    def fetch(index_url: tuple[int, str]) -> tuple[str, int]:
        if not hasattr(local, "session"):
            local.session = _raw_session(settings)[0]
        target = out / f"page-{index_url[0]}.csv"
        headers = _stream_to(local.session, index_url[1], target)
        return str(target), int(headers["Sforce-NumberOfRecords"])

    with ThreadPoolExecutor(4) as pool:
        pages = list(pool.map(fetch, enumerate(urls)))
    return {"pages": len(pages), "records": sum(n for _, n in pages),
            "files": {"successful": [name for name, _ in pages]}}


# --- simple-salesforce ---------------------------------------------------------------------------------


def _ssf(settings: dict[str, Any]) -> Any:
    from simple_salesforce import Salesforce

    session, api = _raw_session(settings)
    token = session.headers.pop("Authorization").removeprefix("Bearer ")
    return Salesforce(instance_url=api.split("/services/data/")[0], session_id=token, session=session,
                      version=API.removeprefix("v"))


def ssf_ingest(settings: dict[str, Any], out: Path) -> dict[str, Any]:
    bulk = _ssf(settings).bulk2.Account
    results = bulk.insert(csv_file=settings["source"], **settings.get("options", {}))
    files: dict[str, list[str]] = {"successful": [], "failed": [], "unprocessed": []}
    for index, result in enumerate(results):
        for kind, method in (("successful", bulk.get_successful_records), ("failed", bulk.get_failed_records),
                             ("unprocessed", bulk.get_unprocessed_records)):
            target = out / f"{index}-{kind}.csv"
            method(result["job_id"], file=str(target))
            files[kind].append(str(target))
    return {"jobs": len(results), "files": files,
            "processed": sum(r["numberRecordsProcessed"] for r in results),
            "failed": sum(r["numberRecordsFailed"] for r in results)}


def ssf_query(settings: dict[str, Any], out: Path) -> dict[str, Any]:
    bulk = _ssf(settings).bulk2.Account
    pages = bulk.download(settings["soql"], path=str(out))
    return {"pages": len(pages), "records": sum(page["number_of_records"] for page in pages),
            "files": {"successful": [page["file"] for page in pages]}}


# --- ours -------------------------------------------------------------------------------------------------


class _TaskInstance:
    """What ``execute`` reads from ``context["ti"]``; XCom stays in memory."""

    def __init__(self, run_id: str) -> None:
        self.dag_id, self.run_id, self.task_id = "side_by_side", run_id, "task"
        self.map_index, self.try_number = -1, 1
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = json.loads(json.dumps(value))


def _our_files(folder: Path) -> dict[str, list[str]]:
    names = sorted(str(p) for p in folder.rglob("*") if p.is_file())
    return {
        "successful": [n for n in names if "success" in Path(n).name],
        "failed": [n for n in names if "failed" in Path(n).name and "reload" not in Path(n).name],
        "unprocessed": [n for n in names if "unprocessed" in Path(n).name],
        "all": names,
    }


def ours_ingest(settings: dict[str, Any], out: Path) -> dict[str, Any]:
    from airflow_provider_sfbulk.operators.ingest import SalesforceBulkIngestOperator

    operator = SalesforceBulkIngestOperator(
        task_id="task", salesforce_conn_id=settings["conn_id"], object_name="Account", operation="insert",
        source=settings["source"], results_path=str(out), deferrable=False, poll_interval=1.0,
        max_poll_interval=5.0, **settings.get("options", {}))
    result = operator.execute({"ti": _TaskInstance(out.name)})  # type: ignore[arg-type]
    return {"jobs": len(result["job_ids"]), "files": _our_files(out),
            "processed": result["records_successful"] + result["records_failed"],
            "failed": result["records_failed"]}


def ours_query(settings: dict[str, Any], out: Path) -> dict[str, Any]:
    from airflow_provider_sfbulk.operators.query import SalesforceBulkQueryOperator

    operator = SalesforceBulkQueryOperator(
        task_id="task", salesforce_conn_id=settings["conn_id"], soql=settings["soql"], results_path=str(out),
        max_records_per_page=settings["page_rows"], deferrable=False, poll_interval=1.0,
        max_poll_interval=5.0, **settings.get("options", {}))
    result = operator.execute({"ti": _TaskInstance(out.name)})  # type: ignore[arg-type]
    pages = [uri.removeprefix("file://") for uri in result["files"]]
    return {"pages": len(pages), "records": result["record_count"], "files": {"successful": pages}}


CLIENTS = {
    ("raw", "ingest"): raw_ingest,
    ("ssf", "ingest"): ssf_ingest,
    ("ours", "ingest"): ours_ingest,
    ("raw", "query"): raw_query,
    ("raw_parallel", "query"): raw_parallel_query,
    ("ssf", "query"): ssf_query,
    ("ours", "query"): ours_query,
}


def main(argv: list[str]) -> None:
    client, case, settings_json = argv
    settings = json.loads(settings_json)
    out = Path(settings["out"])
    out.mkdir(parents=True, exist_ok=True)
    if client == "ours":  # Airflow and the operator, imported before the work starts (counted apart)
        import airflow_provider_sfbulk.operators.ingest
        import airflow_provider_sfbulk.operators.query  # noqa: F401
    elif client == "ssf":
        import simple_salesforce  # noqa: F401
    else:
        import requests  # noqa: F401
    profiler = None
    if settings.get("cprofile") and client == "ours":  # where our CPU goes (the figures are then slower)
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    wall, cpu = time.perf_counter(), time.process_time()
    result = CLIENTS[(client, case)](settings, out)
    result["work_wall"], result["work_cpu"] = time.perf_counter() - wall, time.process_time() - cpu
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(settings["cprofile"])
    print("RESULT=" + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
