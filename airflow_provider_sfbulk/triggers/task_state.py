"""Whether the task of a cancelled trigger was really killed, for Airflow before 3.3.

Airflow 3.3 calls a trigger's ``on_kill`` when a user kills the deferred task. Earlier versions only
cancel the trigger, and they cancel it in the same way when the triggerer merely restarts or hands the
trigger to another triggerer. Like Airflow's own providers, the trigger then asks for the task's state:
still ``deferred`` means the wait moves elsewhere and the jobs must go on; any other state (failed,
success, up for retry, cleared) means a user ended the task, and the jobs may be aborted.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from airflow import __version__ as AIRFLOW_VERSION

from airflow_provider_sfbulk.common.logs import Log

__all__ = ["TRIGGER_ON_KILL", "killed_by_user"]


def _version(text: str) -> tuple[int, int]:
    numbers = [int(part) for part in re.findall(r"\d+", text)[:2]]
    return (numbers + [0, 0])[0], (numbers + [0, 0])[1]


#: True when the triggerer calls ``on_kill`` itself (Airflow 3.3+).
TRIGGER_ON_KILL = _version(AIRFLOW_VERSION) >= (3, 3)

_DEFERRED = "deferred"


def _state_from_database(task_instance: Any) -> str | None:
    """Airflow 2: the task instance's state, read from the metadata database."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(TaskInstance.state)
            .filter(
                TaskInstance.dag_id == task_instance.dag_id,
                TaskInstance.task_id == task_instance.task_id,
                TaskInstance.run_id == task_instance.run_id,
                TaskInstance.map_index == task_instance.map_index,
            )
            .one_or_none()
        )
    return None if row is None or row[0] is None else str(getattr(row[0], "value", row[0]))


def _state_from_api(task_instance: Any) -> str | None:
    """Airflow 3.0 to 3.2: the task instance's state, asked of the API server through the task SDK."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    states = RuntimeTaskInstance.get_task_states(
        dag_id=task_instance.dag_id,
        task_ids=[task_instance.task_id],
        run_ids=[task_instance.run_id],
        map_index=task_instance.map_index,
    )
    state = states.get(task_instance.run_id, {}).get(task_instance.task_id)
    return None if state is None else str(getattr(state, "value", state))


async def killed_by_user(task_instance: Any, log: Log) -> bool:
    """True when the trigger's task is no longer deferred: a user ended it, so its jobs may be aborted.

    False when the task is still deferred (a triggerer restart), when the trigger knows no task
    instance, or when the state cannot be read (then nothing is aborted, and that is logged).
    """
    if task_instance is None:
        return False
    reader = _state_from_database if _version(AIRFLOW_VERSION) < (3, 0) else _state_from_api
    try:
        state = await asyncio.to_thread(reader, task_instance)
    except Exception as err:  # an unknown state never aborts jobs
        log.warning("Could not read the state of the deferred task (%s); its jobs keep running", err)
        return False
    return state is not None and state != _DEFERRED
