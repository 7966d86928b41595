"""One training run on Ray Train: its config, Ray setup, the fine-tuning worker, the intermediate stage, the pipeline
that chains them, and the dual encoder."""
