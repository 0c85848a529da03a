"""Benchmarks as tasks (see ``base.py``): ``tofu`` (question answering, the default), ``muse``
(MUSE-NEWS raw text: VerbMem, KnowMem, PrivLeak) and ``vision``
(forgetting one class of CIFAR-10/100 or of scikit-learn's 8x8 digits, the paper's Appendix D)."""
from sweeper.tasks import tofu  # noqa: F401  (registers on import)
from sweeper.tasks import muse  # noqa: F401
from sweeper.tasks import vision  # noqa: F401
from sweeper.tasks.base import Task, get_task, known_tasks, register_task

__all__ = ["Task", "get_task", "known_tasks", "register_task"]
