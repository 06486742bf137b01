"""Mutation testing of the modules where a silent bug loses data (issue 12, part 4); run by scripts/mutation.

mutmut 3 reads one ``[tool.mutmut]`` table from ``pyproject.toml`` in the directory it runs in and copies
the package and ``tests/`` into ``mutants/`` there. Each module group below gets its own work folder,
``.mutation/<group>/``: a copy of the package, the tests and ``pyproject.toml`` with the shared
``[tool.mutmut]`` settings plus the group's files to mutate and its test selection. mutmut runs in that
folder; its ``mutants/`` tree stays there after the run (``cd .mutation/<group> && ../../.venv/bin/mutmut
show <mutant>`` shows a diff). The score is read from mutmut's result files (``*.meta``).

Usage: ``_mutation.py [--max-children N] [--sample DIGITS] [GROUP ...]`` (no group: all of them, one after
the other). ``--sample 05`` runs only the mutants whose number ends in 0 or 5 (about one in five, the same
ones every run): mutmut numbers the mutants of each function 1, 2, 3..., so a sample leaves out the
functions with fewer mutants than the digit, and its score is an estimate.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "airflow_provider_sfbulk"
WORK = ROOT / ".mutation"


@dataclass(frozen=True)
class Group:
    """A module group: the files mutmut mutates and the smallest test selection that covers them."""

    name: str
    modules: tuple[str, ...]  # paths under the package
    tests: tuple[str, ...]
    # Score only the mutants of these functions (mutmut names them x_<function> / xǁClassǁmethod);
    # empty: every mutant of the group's modules.
    functions: tuple[str, ...] = field(default=())


GROUPS = (
    Group(
        "csv-split",
        ("csvio/scanner.py", "csvio/split.py"),
        (
            "tests/unit/csvio/test_csv_split_cases.py",
            "tests/unit/csvio/test_csv_diagnostics_exact.py",
            "tests/unit/csvio/test_csv_split_properties.py",
            "tests/unit/csvio/test_tee.py",
            "tests/unit/csvio/test_record_size_limit.py",
            "tests/unit/csvio/test_csv_utf8_boundary.py",
            "tests/unit/csvio/test_csv_header_errors_exact.py",
            "tests/unit/csvio/test_csv_fast_paths_exact.py",
        ),
    ),
    Group(
        "failed-rows",
        ("csvio/failed_rows.py",),
        (
            "tests/unit/csvio/test_failed_rows.py",
            "tests/unit/csvio/test_failed_rows_exact.py",
            "tests/unit/csvio/test_failed_rows_unprocessed_properties.py",
            "tests/unit/operators/test_ingest_results_module.py",
        ),
    ),
    Group(
        "reconcile-retry",
        ("ingest/summary.py", "ingest/retries.py"),
        (
            "tests/unit/operators/test_ingest_retry_plan_exact.py",
            "tests/unit/operators/test_ingest_summary_exact.py",
            "tests/unit/operators/test_ingest_unprocessed.py",
        ),
    ),
    Group(
        "checkpoint-files",
        ("common/checkpoint.py", "common/json_files.py"),
        (
            "tests/unit/common/test_checkpoint.py",
            "tests/unit/common/test_json_files.py",
            "tests/unit/common/test_checkpoint_files_exact.py",
        ),
    ),
    Group(
        "ingest-resume",
        ("ingest/state.py", "ingest/journal.py", "ingest/earlier.py"),
        (
            "tests/unit/operators/test_ingest_state_round_trip.py",
            "tests/unit/operators/test_ingest_state_exact.py",
            "tests/unit/operators/test_ingest_journal_exact.py",
            "tests/unit/operators/test_ingest_earlier_exact.py",
            "tests/unit/operators/test_ingest_clear_after_fix.py",
        ),
    ),
    Group(
        "result-pages-parse",
        ("protocol/api.py",),
        ("tests/unit/protocol/test_protocol_api.py", "tests/unit/protocol/test_result_pages_exact.py"),
        functions=(
            "build_query_results",
            "build_result_pages",
            "parse_result_page_headers",
            "parse_result_url",
            "_result_links",
            "parse_result_pages",
            "api_link_url",
        ),
    ),
    Group(
        "paging",
        ("query/extract.py", "query/pages.py"),
        (
            "tests/unit/query/",
            "tests/unit/operators/test_query_incremental.py",
            # Races the emulator (it aborts a job that may already be complete): on a loaded machine it
            # fails the clean run that mutmut needs before it tries any mutant.
            "--deselect",
            "tests/unit/query/test_query_download.py::test_unfinished_job_is_refused",
        ),
    ),
)

# Settings every group shares (mutmut 3.8). Coverage is not used to skip lines: mutmut's own per-test
# function tracing already runs, for each mutant, only the tests that call the mutated function.
SHARED = {
    "source_paths": [PACKAGE],
    "use_git_change_detection": False,  # the work folder is a copy, not a checkout
    "timeout_multiplier": 10.0,
}

KILLED = {1, 3, 36, 37, 24, -24, 152, 255}  # failed test, pytest error, timeout, type check
SURVIVED = {0}
NO_TESTS = {5, 33}


def mutmut_table(group: Group) -> str:
    """The group's ``[tool.mutmut]`` table, TOML."""
    settings = dict(SHARED)
    settings["only_mutate"] = [f"{PACKAGE}/{module}" for module in group.modules]
    settings["pytest_add_cli_args_test_selection"] = list(group.tests)
    # The test command's options, minus the cache (mutmut runs pytest in-process many times).
    settings["pytest_add_cli_args"] = ["-p", "no:cacheprovider"]
    lines = ["[tool.mutmut]"]
    for key, value in settings.items():
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def prepare(group: Group) -> Path:
    """A fresh work folder for the group (an earlier run's results are dropped)."""
    folder = WORK / group.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis")
    shutil.copytree(ROOT / PACKAGE, folder / PACKAGE, ignore=ignore)
    shutil.copytree(ROOT / "tests", folder / "tests", ignore=ignore)
    pyproject = (ROOT / "pyproject.toml").read_text("utf-8")
    pyproject = re.sub(r"(?ms)^\[tool\.mutmut\].*?(?=^\[)", "", pyproject)
    (folder / "pyproject.toml").write_text(pyproject + "\n" + mutmut_table(group), "utf-8")
    return folder


def results(folder: Path, group: Group) -> dict[str, int | None]:
    """Each mutant's name and the exit code of its test run, from mutmut's ``*.meta`` files."""
    codes: dict[str, int | None] = {}
    for module in group.modules:
        meta = folder / "mutants" / PACKAGE / (module + ".meta")
        if not meta.exists():
            continue
        data = json.loads(meta.read_text("utf-8"))
        for name, code in data.get("exit_code_by_key", {}).items():
            if code is None:  # not run: outside the sample
                continue
            if group.functions and function_of(name) not in group.functions:
                continue
            codes[name] = code
    return codes


def function_of(mutant: str) -> str:
    """``pkg.mod.x_parse_result_pages__mutmut_3`` -> ``parse_result_pages``; methods keep ``Class.m``."""
    last = mutant.rsplit(".", 1)[-1].rsplit("__mutmut_", 1)[0]
    if last.startswith("xǁ"):
        return ".".join(part for part in last[2:].split("ǁ") if part)
    return last[2:] if last.startswith("x_") else last


def run(group: Group, max_children: int, sample: str) -> dict[str, object]:
    folder = prepare(group)
    env = dict(os.environ)
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    env.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
    home = tempfile.mkdtemp(prefix="sfbulk-mutation-")
    env["AIRFLOW_HOME"] = home
    mutmut = ROOT / ".venv" / "bin" / "mutmut"
    log = folder / "mutmut.log"
    print(f">> {group.name}: mutating {', '.join(group.modules)}", flush=True)
    print(f"   tests: {' '.join(group.tests)}", flush=True)
    names = [f"*__mutmut_*[{sample}]"] if sample else []
    if sample:
        print(f"   sample: mutants numbered *[{sample}]", flush=True)
    started = time.monotonic()
    with log.open("w") as out:
        rc = subprocess.call(
            [str(mutmut), "run", "--max-children", str(max_children), *names],
            cwd=folder,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    seconds = time.monotonic() - started
    shutil.rmtree(home, ignore_errors=True)
    codes = results(folder, group)
    killed = sorted(n for n, c in codes.items() if c in KILLED)
    survived = sorted(n for n, c in codes.items() if c in SURVIVED)
    untested = sorted(n for n, c in codes.items() if c in NO_TESTS)
    other = sorted(n for n, c in codes.items() if c not in KILLED | SURVIVED | NO_TESTS)
    total = len(codes)
    score = 100.0 * len(killed) / total if total else 0.0
    print(
        f"   {len(killed)} killed / {total} mutants = {score:.1f} %  "
        f"({len(survived)} survived, {len(untested)} no test, {len(other)} other; {seconds / 60:.1f} min)",
        flush=True,
    )
    for title, names in (("survived", survived), ("no test", untested), ("other", other)):
        for name in names:
            print(f"   {title}: {name}", flush=True)
    if rc != 0 or not total:
        print(f"   mutmut exited {rc}; its output: {log}", flush=True)
    return {"group": group.name, "killed": len(killed), "total": total, "rc": rc, "sample": sample}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--max-children", type=int, default=2, help="parallel mutant runs (default 2)")
    parser.add_argument("--sample", default="", metavar="DIGITS", help="run only mutants numbered *[DIGITS]")
    parser.add_argument("groups", nargs="*", help=f"groups: {' '.join(g.name for g in GROUPS)}")
    args = parser.parse_args()
    by_name = {g.name: g for g in GROUPS}
    unknown = [name for name in args.groups if name not in by_name]
    if unknown:
        parser.error(f"unknown group(s) {unknown}; groups: {' '.join(by_name)}")
    chosen = [by_name[name] for name in args.groups] if args.groups else list(GROUPS)
    if args.sample and not args.sample.isdigit():
        parser.error("--sample takes digits, e.g. 05")
    summary = [run(group, args.max_children, args.sample) for group in chosen]
    print(">> score per group")
    for row in summary:
        total = int(row["total"])  # type: ignore[call-overload]
        killed = int(row["killed"])  # type: ignore[call-overload]
        pct = f"{100.0 * killed / total:.1f} %" if total else "n/a"
        sampled = f"  (sample *[{row['sample']}])" if row["sample"] else ""
        print(f"   {row['group']:<20} {killed:>4} / {total:<4} {pct}{sampled}")
    return 1 if any(row["rc"] != 0 or not row["total"] for row in summary) else 0


if __name__ == "__main__":
    sys.exit(main())
