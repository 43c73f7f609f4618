"""Fault matrix: the delivery semantics of docs/delivery.md proved with real processes.

The service is started with its own CLI (``python -m adapter.cli serve --config FILE``), killed with
SIGKILL or stopped with SIGTERM for real; the OTLP receiver that must outlive service restarts runs
as its own process (``tests/otlp_receiver.py --jsonl``) and spans are counted by span id from its
JSONL file. Every test is marked ``e2e``.
"""
