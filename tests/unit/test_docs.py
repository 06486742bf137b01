"""The documentation in ``docs/`` must not drift from the code.

Checked here, against the code itself (nothing is listed by hand):

- every constructor parameter of every operator, sensor, trigger and hook class of the package appears
  in its section of ``docs/operators.md``, with its real default, and no removed parameter lingers;
- every hook method, exception class and the default retry policy are named in ``docs/operators.md``;
- every extra field of the connection form, every auth type and its form label appear in
  ``docs/connections.md``, and every connection example (JSON or URI) passes the provider's own
  connection validation with the auth type it claims;
- the XCom and trigger-event examples in ``docs/results-and-xcom.md`` have exactly the keys the code
  produces (or its docstring promises);
- every relative link and anchor in ``docs/`` and ``README.md`` resolves, the README lists every page and
  ``docs/index.md`` links them all;
- every Python snippet parses, imports only names that exist, and passes only keyword arguments that
  the called class accepts; every JSON snippet parses.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import pkgutil
import re
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import airflow_provider_sfbulk

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PACKAGE = "airflow_provider_sfbulk"

#: Sections of docs/operators.md that document a class defined under another (private) name.
SECTION_FOR = {"_SalesforceBulkHookBase": "SalesforceBulkHook"}

_FENCE = re.compile(r"^(```|~~~)")
_CODE_BLOCK = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_ROW_NAME = re.compile(r"^\|\s*`([A-Za-z_][A-Za-z0-9_]*)`\s*\|")
_CODE_SPAN = re.compile(r"`([^`]+)`")


# --- markdown helpers ---------------------------------------------------------------------------------


def read(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def doc_pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def outside_code(text: str) -> list[str]:
    """The lines of ``text`` that are not inside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def sections(text: str, level: int = 2) -> dict[str, str]:
    """``{heading: body}`` for headings of exactly ``level``; bodies keep their code blocks, and lines
    inside code blocks are never taken for headings."""
    marker = "#" * level + " "
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line.strip()):
            fenced = not fenced
        elif not fenced and line.startswith(marker):
            current = found.setdefault(line[len(marker) :].strip(), [])
            continue
        elif not fenced and re.match(rf"^#{{1,{level}}} ", line):
            current = None
            continue
        if current is not None:
            current.append(line)
    return {heading: "\n".join(body) for heading, body in found.items()}


def parameter_rows(section: str) -> dict[str, str]:
    """``{name: default cell}`` from the tables of ``section`` whose header starts with ``| Parameter``."""
    rows: dict[str, str] = {}
    in_table = False
    for line in section.splitlines():
        stripped = line.strip()
        if not stripped.startswith("|"):
            in_table = False
            continue
        if re.match(r"^\|\s*Parameter\s*\|", stripped):
            in_table = True
            continue
        match = _ROW_NAME.match(stripped) if in_table else None
        if match:
            cells = [cell.strip() for cell in stripped.strip("|").split("|")]
            rows[match.group(1)] = cells[1] if len(cells) > 1 else ""
    return rows


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    headings = [line.lstrip("#").strip() for line in outside_code(path.read_text()) if line.startswith("#")]
    return {slug(heading) for heading in headings}


def code_blocks(text: str, language: str) -> list[str]:
    blocks = _CODE_BLOCK.findall(textwrap.dedent(text))
    return [textwrap.dedent(body) for lang, body in blocks if lang == language]


def all_code_blocks(language: str) -> list[tuple[str, str]]:
    blocks = []
    for page in doc_pages():
        # Blocks inside list items are indented: dedent each line run by finding fences anywhere.
        text = page.read_text(encoding="utf-8")
        for match in re.finditer(r"^( *)```(\w*)[^\n]*\n(.*?)^\1```", text, re.S | re.M):
            indent, lang, body = match.groups()
            if lang == language:
                lines = [
                    line[len(indent) :] if line.startswith(indent) else line for line in body.splitlines()
                ]
                blocks.append((page.name, "\n".join(lines)))
    return blocks


# --- the classes of the package -----------------------------------------------------------------------


def _public_classes() -> list[type]:
    from airflow.providers.common.compat.sdk import BaseHook, BaseOperator, BaseOperatorLink
    from airflow.triggers.base import BaseTrigger

    bases = (BaseOperator, BaseTrigger, BaseHook, BaseOperatorLink)
    found: dict[str, type] = {}
    for info in pkgutil.walk_packages(airflow_provider_sfbulk.__path__, f"{PACKAGE}."):
        if ".emulator" in info.name:
            continue
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if (
                inspect.isclass(obj)
                and obj.__module__ == module.__name__
                and issubclass(obj, bases)
                and not obj.__name__.startswith("_")
            ):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return sorted(found.values(), key=lambda cls: cls.__name__)


PUBLIC_CLASSES = _public_classes()


def _own_init_owner(cls: type) -> type | None:
    """The class of the package whose ``__init__`` ``cls`` uses (itself, or a package base)."""
    for klass in cls.__mro__:
        if klass.__module__.startswith(PACKAGE) and "__init__" in klass.__dict__:
            return klass
    return None


def _init_parameters(owner: type) -> list[inspect.Parameter]:
    signature = inspect.signature(owner.__dict__["__init__"])
    return [
        p
        for p in signature.parameters.values()
        if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]


def _documented_classes() -> dict[str, type]:
    """``{section heading: class whose __init__ it documents}``."""
    result: dict[str, type] = {}
    for cls in PUBLIC_CLASSES:
        owner = _own_init_owner(cls)
        if owner is not None:
            result[SECTION_FOR.get(owner.__name__, owner.__name__)] = owner
    return result


DOCUMENTED = _documented_classes()

_EVAL_NAMES = {"timedelta": timedelta, "frozenset": frozenset, "set": set, "tuple": tuple}


def _literal(text: str) -> Any:
    return eval(text, {"__builtins__": {}}, dict(_EVAL_NAMES))


def _default_documented(cell: str, default: Any) -> bool:
    if "default_deferrable" in cell:  # computed from the Airflow config at import time
        return True
    for span in _CODE_SPAN.findall(cell):
        try:
            value = _literal(span)
        except Exception:
            continue
        if type(value) is type(default) and value == default:
            return True
        if (
            isinstance(default, float)
            and isinstance(value, int)
            and not isinstance(value, bool)
            and float(value) == default
        ):
            return True
    return False


# --- operators.md ----------------------------------------------------------------------------------------


def test_the_package_has_the_classes_this_test_expects() -> None:
    names = {cls.__name__ for cls in PUBLIC_CLASSES}
    assert {
        "SalesforceBulkIngestOperator",
        "SalesforceBulkQueryOperator",
        "SalesforceBulkJobResultsOperator",
        "SalesforceBulkJobSensor",
        "SalesforceBulkJobTrigger",
        "SalesforceBulkJobLink",
        "SalesforceBulkHook",
        "SalesforceBulkAsyncHook",
    } <= names
    assert "SalesforceBulkBaseOperator" in DOCUMENTED


def test_every_public_class_has_a_section_in_operators_md() -> None:
    text = read("operators.md")
    found = sections(text)
    missing = [
        cls.__name__
        for cls in PUBLIC_CLASSES
        if f"`{cls.__name__}`" not in text and cls.__name__ not in found
    ]
    assert not missing, f"classes without documentation in docs/operators.md: {missing}"
    missing_sections = [heading for heading in DOCUMENTED if heading not in found]
    assert not missing_sections, f"missing '## <Class>' sections in docs/operators.md: {missing_sections}"


@pytest.mark.parametrize("heading", sorted(DOCUMENTED))
def test_every_parameter_is_documented_with_its_default(heading: str) -> None:
    owner = DOCUMENTED[heading]
    section = sections(read("operators.md"))[heading]
    rows = parameter_rows(section)
    parameters = _init_parameters(owner)
    names = [p.name for p in parameters]
    missing = [name for name in names if name not in rows]
    assert not missing, f"{heading}: parameters missing from docs/operators.md: {missing}"
    stale = [name for name in rows if name not in names]
    assert not stale, f"{heading}: docs/operators.md lists parameters the code does not have: {stale}"
    wrong = []
    for parameter in parameters:
        cell = rows[parameter.name]
        if parameter.default is inspect.Parameter.empty:
            if "required" not in cell:
                wrong.append(f"{parameter.name} is required, the docs say {cell!r}")
        elif not _default_documented(cell, parameter.default):
            wrong.append(f"{parameter.name} defaults to {parameter.default!r}, the docs say {cell!r}")
    assert not wrong, f"{heading}: " + "; ".join(wrong)


def test_templated_fields_are_named_in_their_section() -> None:
    found = sections(read("operators.md"))
    for cls in PUBLIC_CLASSES:
        fields = getattr(cls, "template_fields", ())
        section = found.get(cls.__name__)
        if not fields or section is None:
            continue
        missing = [name for name in fields if f"`{name}`" not in section]
        assert not missing, f"{cls.__name__}: template fields not named in its section: {missing}"


def test_every_hook_method_and_exception_is_named() -> None:
    from airflow_provider_sfbulk import exceptions
    from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkAsyncHook, SalesforceBulkHook
    from airflow_provider_sfbulk.protocol.retry import DEFAULT_RETRY_POLICY

    text = read("operators.md")
    section = sections(text)["SalesforceBulkHook"]
    internal = {
        "get_conn", "close", "aclose", "get_connection_form_widgets", "get_ui_field_behaviour", "config"
    }
    names: set[str] = set()
    for hook in (SalesforceBulkHook, SalesforceBulkAsyncHook):
        for klass in hook.__mro__:
            if not klass.__module__.startswith(PACKAGE):
                continue
            names.update(name for name in vars(klass) if not name.startswith("_") and name not in internal)
    names -= {"conn_name_attr", "default_conn_name", "conn_type", "hook_name"}
    missing = sorted(name for name in names if f"`{name}" not in section)
    assert not missing, f"hook methods not in the SalesforceBulkHook section: {missing}"
    missing_errors = [name for name in exceptions.__all__ if name not in text]
    assert not missing_errors, f"exceptions not named in docs/operators.md: {missing_errors}"
    policy = DEFAULT_RETRY_POLICY
    assert (
        f"RetryPolicy(max_attempts={policy.max_attempts}, base_delay={policy.base_delay}, "
        f"max_delay={policy.max_delay})"
    ) in section


def test_link_section_names_the_real_link() -> None:
    from airflow_provider_sfbulk.links.job import JOBS_LIST_PATH, LINK_XCOM_KEY, SalesforceBulkJobLink

    section = sections(read("operators.md"))["SalesforceBulkJobLink"]
    assert SalesforceBulkJobLink.name in section
    assert LINK_XCOM_KEY in section
    assert JOBS_LIST_PATH in section
    assert "/lightning/setup/AsyncApiJobStatus/page?address=%2F" in section


# --- connections.md ------------------------------------------------------------------------------------


def test_every_connection_field_and_auth_type_is_documented() -> None:
    from airflow_provider_sfbulk.get_provider_info import CONN_FIELDS, UI_FIELD_BEHAVIOUR
    from airflow_provider_sfbulk.protocol.connection import DEFAULT_API_VERSION, DEFAULT_TIMEOUT, AuthType

    text = read("connections.md")
    rows = {
        match.group(1): line
        for line in text.splitlines()
        if (match := _ROW_NAME.match(line.strip()))
    }
    missing = [name for name in CONN_FIELDS if name not in rows]
    assert not missing, f"extra fields missing from the docs/connections.md tables: {missing}"
    labels = [spec["label"] for spec in CONN_FIELDS.values() if spec["label"] not in text]
    assert not labels, f"form labels not shown in docs/connections.md: {labels}"
    relabelled = [label for label in UI_FIELD_BEHAVIOUR["relabeling"].values() if label not in text]
    assert not relabelled, f"relabelled standard fields not shown: {relabelled}"
    for auth in AuthType:
        assert f"`{auth.value}`" in text, auth
        assert re.search(rf"^#+ .*\(`{auth.value}`\)", text, re.M), f"no section for auth_type {auth.value}"
    assert f"`{DEFAULT_API_VERSION}`" in rows["api_version"]
    assert f"`{int(DEFAULT_TIMEOUT)}`" in rows["timeout"]


def _connection_examples() -> list[tuple[str, str]]:
    """``(kind, value)`` of every ``AIRFLOW_CONN_...='...'`` and ``--conn-json '...'`` in the docs."""
    examples = []
    for page in doc_pages():
        text = page.read_text(encoding="utf-8")
        for match in re.finditer(r"(?:AIRFLOW_CONN_[A-Z0-9_]+=|--conn-json )'(.*?)'", text, re.S):
            value = match.group(1)
            examples.append(("json" if value.lstrip().startswith("{") else "uri", value))
    return examples


def test_connection_examples_pass_validation(tmp_path: Path) -> None:
    from airflow.models.connection import Connection

    from airflow_provider_sfbulk.protocol.connection import parse_connection

    key_file = tmp_path / "key.pem"
    key_file.write_text("not used: the connection is only validated")
    examples = _connection_examples()
    kinds = {kind for kind, _ in examples}
    assert kinds == {"json", "uri"}, "expected JSON and URI connection examples"
    seen_auth_types = set()
    for kind, value in examples:
        if kind == "json":
            document = json.loads(value)
            assert document["conn_type"] == "salesforce_bulk"
            extra = dict(document.get("extra", {}))
            if "private_key_file" in extra:
                extra["private_key_file"] = str(key_file)
            host, login, password = document.get("host"), document.get("login"), document.get("password")
        else:
            conn = Connection(uri=value)
            assert conn.conn_type == "salesforce_bulk", value
            extra, host, login, password = dict(conn.extra_dejson), conn.host, conn.login, conn.password
            if "private_key_file" in extra:
                extra["private_key_file"] = str(key_file)
        config = parse_connection("docs_example", host=host, login=login, password=password, extra=extra)
        assert config.auth_type.value == extra["auth_type"]
        seen_auth_types.add(config.auth_type.value)
    from airflow_provider_sfbulk.protocol.connection import AuthType

    assert seen_auth_types == {auth.value for auth in AuthType}, "every auth type needs an example"
    uri_auth_types = {
        Connection(uri=value).extra_dejson.get("auth_type") for kind, value in examples if kind == "uri"
    }
    assert uri_auth_types == seen_auth_types, "every auth type needs a URI example too"


# --- results-and-xcom.md -------------------------------------------------------------------------------


def _docstring_keys(cls: type) -> list[str]:
    """Top-level keys of the XCom example in a class docstring (``{"key": ...}``, first level only)."""
    doc = inspect.getdoc(cls) or ""
    block = doc.split("::", 1)[1] if "::" in doc else doc
    block = block.split("\n\n", 2)[1] if block.startswith("\n\n") else block
    keys, depth = [], 0
    for token in re.finditer(r'[{}\[\]]|"(\w+)"\s*:', block):
        text = token.group(0)
        if text in "{[":
            depth += 1
        elif text in "}]":
            depth -= 1
            if depth == 0:
                break
        elif depth == 1:
            keys.append(token.group(1))
    return keys


def _json_block(section: str) -> dict[str, Any]:
    blocks = code_blocks(section, "json")
    assert blocks, "no JSON example in this section"
    return json.loads(blocks[0])


def _xcom_sections() -> dict[str, str]:
    return sections(read("results-and-xcom.md"), level=3)


@pytest.mark.parametrize(
    ("heading", "class_path"),
    [
        ("Ingest operator", "operators.ingest.SalesforceBulkIngestOperator"),
        ("Results operator", "operators.results.SalesforceBulkJobResultsOperator"),
        ("Job list operator", "operators.jobs.SalesforceBulkJobListOperator"),
        ("Sensor", "sensors.job.SalesforceBulkJobSensor"),
    ],
)
def test_xcom_examples_match_the_docstrings(heading: str, class_path: str) -> None:
    module_name, _, class_name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(f"{PACKAGE}.{module_name}"), class_name)
    promised = _docstring_keys(cls)
    assert promised, f"{class_name}: no XCom example found in the docstring"
    documented = list(_json_block(_xcom_sections()[heading]))
    assert set(documented) == set(promised), (
        f"{heading}: docs keys {sorted(documented)} differ from the docstring's {sorted(promised)}"
    )


def test_query_xcom_example_matches_the_code() -> None:
    from airflow_provider_sfbulk.query.manifest import ExtractResult

    produced = ExtractResult(
        job_id="750", files=[], record_count=0, columns=[], manifest="m", results_path="r"
    ).to_xcom()
    documented = _json_block(_xcom_sections()["Query operator"])
    assert set(documented) == set(produced)


def test_trigger_event_example_matches_the_code() -> None:
    from airflow_provider_sfbulk.protocol.states import JobKind
    from airflow_provider_sfbulk.protocol.waiting import EVENT_STATUSES, JobSummary, WaitOutcome

    event = WaitOutcome("success", JobKind.INGEST, (JobSummary("7505f000001AbCdAAK", "JobComplete"),), "m")
    produced = event.to_event()
    section = _xcom_sections()["Trigger event"]
    documented = _json_block(section)
    assert set(documented) == set(produced)
    assert set(documented["jobs"][0]) == set(produced["jobs"][0])
    assert all(f"`{status}`" in section for status in EVENT_STATUSES)
    sensor = _json_block(_xcom_sections()["Sensor"])
    assert set(sensor["jobs"][0]) == set(produced["jobs"][0])


def test_result_layout_names_are_the_real_ones() -> None:
    from airflow_provider_sfbulk.common.checkpoint import CHECKPOINT_FILE
    from airflow_provider_sfbulk.common.paths import RESULTS_BASE_OPTION
    from airflow_provider_sfbulk.ingest.results import MANIFEST_NAME
    from airflow_provider_sfbulk.links.job import LINK_XCOM_KEY
    from airflow_provider_sfbulk.protocol.states import RESULT_SETS
    from airflow_provider_sfbulk.query.manifest import MANIFEST_FORMAT, PARTS_FOLDER

    text = read("results-and-xcom.md")
    section, key = RESULTS_BASE_OPTION
    assert f"[{section}] {key}" in text
    assert f"AIRFLOW__{section.upper()}__{key.upper()}" in text
    for name in (MANIFEST_NAME, CHECKPOINT_FILE, MANIFEST_FORMAT, PARTS_FOLDER, LINK_XCOM_KEY, *RESULT_SETS):
        assert name in text, name


# --- links, pages, snippets ----------------------------------------------------------------------------


def _link_sources() -> list[Path]:
    return [*doc_pages(), ROOT / "README.md"]


@pytest.mark.parametrize("page", _link_sources(), ids=lambda path: path.name)
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for line in outside_code(page.read_text(encoding="utf-8")):
        for target in _LINK.findall(line):
            if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
                continue
            path_part, _, anchor = target.partition("#")
            resolved = (page.parent / path_part).resolve() if path_part else page
            missing_anchor = bool(anchor) and resolved.suffix == ".md" and anchor not in anchors(resolved)
            if not resolved.exists() or missing_anchor:
                broken.append(target)
    assert not broken, f"{page.name}: broken links {broken}"


def test_readme_and_index_list_every_page() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    documentation = readme.split("## Documentation", 1)
    assert len(documentation) == 2, "README.md needs a '## Documentation' section"
    index = read("index.md")
    for page in doc_pages():
        assert f"(docs/{page.name})" in documentation[1], f"README's Documentation section lacks {page.name}"
        if page.name != "index.md":
            assert f"({page.name})" in index, f"docs/index.md does not link {page.name}"


def _allowed_keywords(cls: type) -> set[str] | None:
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        try:
            parameters = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            return None
        names.update(p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))
    return names


def test_python_snippets_use_the_real_api() -> None:
    blocks = all_code_blocks("python")
    assert blocks
    problems = []
    for page, source in blocks:
        try:
            tree = ast.parse(source)
        except SyntaxError as err:
            problems.append(f"{page}: snippet does not parse: {err}")
            continue
        imported: dict[str, Any] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PACKAGE):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    if not hasattr(module, alias.name):
                        problems.append(f"{page}: {node.module} has no {alias.name}")
                    else:
                        imported[alias.asname or alias.name] = getattr(module, alias.name)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            target = imported.get(node.func.id)
            if not inspect.isclass(target):
                continue
            allowed = _allowed_keywords(target)
            if allowed is None:
                continue
            unknown = [kw.arg for kw in node.keywords if kw.arg is not None and kw.arg not in allowed]
            if unknown:
                problems.append(f"{page}: {node.func.id}() takes no {unknown}")
    assert not problems, "\n".join(problems)


def test_json_snippets_parse() -> None:
    blocks = all_code_blocks("json")
    assert blocks
    for page, source in blocks:
        try:
            json.loads(source)
        except ValueError as err:
            pytest.fail(f"{page}: JSON snippet does not parse: {err}\n{source}")


def test_getting_started_uses_the_emulator_defaults() -> None:
    from airflow_provider_sfbulk.emulator.config import EmulatorConfig

    text = read("getting-started.md")
    match = re.search(r"AIRFLOW_CONN_SALESFORCE_BULK_DEFAULT='(\{.*?\})'", text, re.S)
    assert match, "getting-started.md needs the emulator connection"
    document = json.loads(match.group(1))
    config = EmulatorConfig()
    assert document["login"] == config.username
    assert document["password"] == config.password
    extra = document["extra"]
    assert (extra["client_id"], extra["client_secret"]) == (config.client_id, config.client_secret)
    assert extra["security_token"] == config.security_token
    port = re.search(r"sfbulk-emulator .*--port (\d+)", text)
    assert port, "getting-started.md should start the emulator with --port"
    assert document["host"] == f"http://127.0.0.1:{port.group(1)}"


def test_docstrings_document_every_parameter() -> None:
    """The docstrings are the reference: each public class's ``:param:`` lines cover its constructor
    (classes sharing one constructor, such as the two hooks, may document it once between them)."""
    problems = []
    for cls in PUBLIC_CLASSES:
        owner = _own_init_owner(cls)
        if owner is None:
            continue
        documented: set[str] = set()
        siblings = [other for other in PUBLIC_CLASSES if _own_init_owner(other) is owner]
        for klass in {klass for sibling in siblings for klass in sibling.__mro__}:
            if klass.__module__.startswith(PACKAGE):
                documented.update(re.findall(r":param (\w+):", inspect.getdoc(klass) or ""))
        missing = [p.name for p in _init_parameters(owner) if p.name not in documented]
        if missing:
            problems.append(f"{cls.__name__}: no ':param' for {missing}")
    assert not problems, "; ".join(problems)
