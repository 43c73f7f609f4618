"""The benchmark (``python bench/run.py``): floor, bare echo and the real service, side by side."""
