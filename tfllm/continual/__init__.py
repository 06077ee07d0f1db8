"""Keeping a model current: one model through a sequence of tasks with forgetting measured
(`train`, `tfllm continual`), the task sequence (`protocol`), what holds old knowledge
(`penalties`) and how a run is scored (`scores`)."""
