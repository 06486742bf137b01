"""The task-instance stand-in the operator tests run ``execute`` with (no Airflow metadata DB needed)."""

from __future__ import annotations

import json
from typing import Any


class FakeTI:
    """What the operators read of a task instance: the ids that name results and checkpoint folders, the try
    number, and ``xcom_push``, which keeps a JSON round trip of the value (anything else would fail in XCom).
    """

    def __init__(
        self,
        try_number: int = 1,
        *,
        dag_id: str = "dag",
        run_id: str = "run-1",
        task_id: str = "load",
        map_index: int = -1,
    ) -> None:
        self.dag_id = dag_id
        self.run_id = run_id
        self.task_id = task_id
        self.map_index = map_index
        self.try_number = try_number
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = json.loads(json.dumps(value))
