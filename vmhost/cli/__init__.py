"""The vmhost CLI: talks only HTTP to the daemon."""
