"""The domain of vmhost: models, store, provider, orchestrator and workers. Nothing of HTTP here."""
