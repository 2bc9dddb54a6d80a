"""The daemon: a thin FastAPI transport over vmhost.core, served on a Unix socket and TCP."""
