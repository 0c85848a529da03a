"""A front search: studies, samplers proposing where the Pareto front is open, and the Ray Tune searcher."""
