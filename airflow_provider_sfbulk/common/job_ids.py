"""Job id lists as DAG authors pass them: a list, one id, or the rendered text of a list."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable
from typing import Any

__all__ = ["parse_job_ids"]

_ID = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")


def parse_job_ids(value: Any) -> list[str]:
    """Normalise ``value`` to a list of job ids.

    Accepts a list/tuple of ids, an ingest operator XCom dict (its ``job_ids``), one id, or text rendered
    from a template: a JSON or Python list (``"['750...', '750...']"``) or ids separated by commas or
    spaces. Every id must look like a Salesforce id (15 or 18 letters and digits).
    """
    if isinstance(value, dict):
        value = value.get("job_ids", [])
    if isinstance(value, str):
        text = value.strip()
        if text.startswith(("[", "(")):
            try:
                value = json.loads(text)
            except ValueError:
                value = ast.literal_eval(text)
        else:
            value = [item for item in re.split(r"[\s,]+", text) if item]
    if not isinstance(value, Iterable):
        raise ValueError(f"job_ids must be a list of job ids, not {type(value).__name__}")
    ids = [str(item).strip() for item in value]
    bad = [item for item in ids if not _ID.match(item)]
    if bad:
        raise ValueError(f"not Salesforce job ids: {', '.join(bad)}")
    if not ids:
        raise ValueError("no job ids given")
    return list(dict.fromkeys(ids))
