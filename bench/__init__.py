"""vmhost's benchmarks: `python -m bench` measures the daemon against the raw Docker engine in the same
run and prints medians, p95 and their ratio to the Docker baseline. Not part of the test suite."""
