"""Benchmarks as tasks (see ``base.py``): ``tofu`` (question answering, the default)."""
from sweeper.tasks import tofu  # noqa: F401  (registers on import)
from sweeper.tasks.base import Task, get_task, known_tasks, register_task

__all__ = ["Task", "get_task", "known_tasks", "register_task"]
