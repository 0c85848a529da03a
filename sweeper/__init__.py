"""unlearning-sweeper: benchmark sweeps of LLM unlearning methods (NGDiff, AutoLR, GDiff, NPO, ...) on Ray."""

__version__ = "0.1.0"
