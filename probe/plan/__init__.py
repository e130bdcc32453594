"""`probe plan EXPERIMENT.toml`: predicted peak memory, disk and time per stage, from the model's config."""
