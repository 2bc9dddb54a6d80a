"""vmhost: a self-hosted control plane for transient development workspaces."""

__version__ = "0.1.0"
