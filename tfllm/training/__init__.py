"""Strategy resolution, optimizers and schedules, and the pretraining loop."""
