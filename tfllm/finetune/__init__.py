"""Fine-tuning tasks, methods and metrics."""
