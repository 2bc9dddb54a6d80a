"""The domain of vmhost: models, store, engines, orchestrator and workers. Nothing of HTTP here."""
