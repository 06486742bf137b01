"""``GET /jobs/query/{id}/resultPages``: the answer shapes real orgs have been seen to give.

Salesforce documents (API 58.0+, "Get Parallel Results for a Query Job")::

    {"resultPages": [{"resultUrl": "/services/data/v58.0/jobs/query/750.../results?locator=..."}],
     "nextRecordsUrl": "/services/data/v58.0/jobs/query/750.../resultPages?locator=...", "done": false}

while the element table of the same page spells the next-page field ``nextRecordUrl``. A client library
that runs integration tests against live orgs (msrivastav13/node-sf-bulk2, pull request 35, 2026) moved
to::

    {"resultChunks": [{"resultLink": "/jobs/query/750.../results?locator=...&maxRecords=..."}],
     "nextRecordsUrl": null, "done": true}

with each ``resultLink`` relative to ``/services/data/vXX.X``. Which one a given org answers is not
documented, and some orgs have no such endpoint at all, so the emulator can play any of them
(:data:`SHAPES`):

``documented``
    the documented shape (the default);
``documented-singular``
    the documented shape with the next-page field spelled ``nextRecordUrl``, as the element table has it;
``chunks``
    ``resultChunks`` / ``resultLink``, links relative to ``/services/data/vXX.X``, ``nextRecordsUrl``
    ``null`` on the last call. Best guess: on earlier calls ``nextRecordsUrl`` is the same server-absolute
    path as in the documented shape (the reported example only shows a last call);
``missing``
    the endpoint answers 404 ``NOT_FOUND`` like an org without it.

Every link the emulator hands out works when followed: result links are ordinary
``/results?locator=...&maxRecords=...`` pages, and next-call links carry an opaque cursor.
"""

from __future__ import annotations

import base64
from typing import Any

SHAPE_DOCUMENTED = "documented"
SHAPE_DOCUMENTED_SINGULAR = "documented-singular"
SHAPE_CHUNKS = "chunks"
SHAPE_MISSING = "missing"
#: Every value of the ``result_pages_shape`` setting.
SHAPES = (SHAPE_DOCUMENTED, SHAPE_CHUNKS, SHAPE_DOCUMENTED_SINGULAR, SHAPE_MISSING)
#: Result URLs per call (Salesforce: "up to five").
PAGES_PER_CALL = 5


class CursorError(ValueError):
    """A ``resultPages`` cursor the emulator never issued."""


def check_shape(shape: str) -> str:
    """``shape`` when it is one of :data:`SHAPES`; ValueError otherwise."""
    if shape not in SHAPES:
        raise ValueError(f"result_pages_shape must be one of {', '.join(SHAPES)}, not {shape!r}")
    return shape


def encode_cursor(position: int) -> str:
    """Opaque cursor of the next ``resultPages`` call: urlsafe base64 of ``rp<position>``, unpadded."""
    return base64.urlsafe_b64encode(f"rp{position}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The page position a cursor stands for; :class:`CursorError` when it is not one of ours."""
    try:
        text = base64.urlsafe_b64decode(cursor.encode() + b"==").decode()
    except (ValueError, UnicodeDecodeError):
        raise CursorError(cursor) from None
    if not text.startswith("rp") or not text[2:].isdigit():
        raise CursorError(cursor)
    return int(text[2:])


def build_answer(shape: str, *, version: str, job_id: str, locators: list[str | None], start: int,
                 max_records: int) -> dict[str, Any]:
    """The JSON answer of one ``resultPages`` call in ``shape`` (not :data:`SHAPE_MISSING`).

    ``locators`` are the result-page locators of the whole job (None: the first page); this call hands
    out up to :data:`PAGES_PER_CALL` of them from ``start``.
    """
    root = f"/services/data/v{version}"
    job_path = f"/jobs/query/{job_id}"
    chosen = locators[start:start + PAGES_PER_CALL]
    queries = [f"maxRecords={max_records}" if loc is None else f"locator={loc}&maxRecords={max_records}"
               for loc in chosen]
    end = start + len(chosen)
    done = end >= len(locators)
    next_url = None
    if not done:
        next_url = f"{root}{job_path}/resultPages?locator={encode_cursor(end)}&maxRecords={max_records}"
    if shape == SHAPE_CHUNKS:
        links = [{"resultLink": f"{job_path}/results?{query}"} for query in queries]
        return {"resultChunks": links, "nextRecordsUrl": next_url, "done": done}
    pages = [{"resultUrl": f"{root}{job_path}/results?{query}"} for query in queries]
    next_key = "nextRecordUrl" if shape == SHAPE_DOCUMENTED_SINGULAR else "nextRecordsUrl"
    return {"resultPages": pages, next_key: next_url, "done": done}
