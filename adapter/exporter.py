"""The export side, built from the settings: in a worker's thread, or in export processes.

With ``export_processes: 0`` each worker process runs the ``Delivery`` loop in a background thread.
With ``export_processes: N`` the ``serve`` process starts N processes that run only that loop, and
the workers only validate and store. Mapping and building protobuf messages are the CPU-heavy part
of the service; in a worker they hold Python's interpreter lock, and a request that arrives meanwhile
waits for it, up to a switch interval (5 ms) at a time. In processes of their own they compete for
the cores only, where the kernel schedules them, behind requests (``export_nice``).

An export process is told nothing by the workers: it polls the store (``EXPORT_PROCESS_POLL_S``) when
it has nothing to do. The store is what they share; its leases keep two processes from exporting
the same batch, as they do between the threads of several workers.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from types import FrameType

from prometheus_client import CollectorRegistry

from adapter.delivery import Delivery, DeliveryConfig, ExportTarget
from adapter.metrics import Metrics
from adapter.otlp import TransportConfig, make_transport
from adapter.store import Store
from adapter.version import package_version
from config import Settings
from config.tenants import DEFAULT_TENANT, TenantSettings
from mapping import MappingOptions, build_resource

log = logging.getLogger("dynamiq_otel.export")

EXPORT_PROCESS_POLL_S = 0.05
"""How often an idle export process looks for batches (a look is one indexed read, no write lock)."""
PARENT_CHECK_S = 1.0
"""How often an export process checks that the ``serve`` process that started it is still there."""
EXPORT_GC_THRESHOLDS = (50_000, 50, 100)
"""The collector's thresholds in an export process (Python's defaults: 700, 10, 10)."""
RESTART_BACKOFF_S = (1.0, 60.0)
"""Delay before restarting an export process that died within a minute of its start: first, largest."""


def mapping_options(settings: Settings) -> MappingOptions:
    """The translator's options from the settings."""
    return MappingOptions(
        dynamiq_attributes=settings.attributes_dynamiq,
        genai_attributes=settings.attributes_genai,
        openinference_attributes=settings.attributes_openinference,
        capture_content=settings.capture_content,
        max_attribute_length=settings.max_attribute_length,
        redact_keys=tuple(fragment.lower() for fragment in settings.redact_keys),
        status_ok_on_success=settings.status_ok_on_success,
        semconv_span_names=settings.span_names == "semconv",
    )


def transport_config(settings: Settings, tenant: TenantSettings | None = None) -> TransportConfig:
    """The OTLP transport of the default tenant, or of ``tenant`` (its endpoint, protocol, headers win)."""
    headers = dict(settings.otlp_headers)
    if tenant is not None:
        headers.update(tenant.otlp_headers)
    return TransportConfig(
        protocol=(tenant.otlp_protocol if tenant and tenant.otlp_protocol else settings.otlp_protocol),
        endpoint=(tenant.otlp_traces_endpoint if tenant and tenant.otlp_traces_endpoint else settings.traces_endpoint),
        headers=tuple(headers.items()),
        timeout_s=settings.otlp_timeout / 1000,
        gzip=settings.otlp_compression == "gzip",
        insecure=settings.otlp_insecure,
        certificate=str(settings.otlp_certificate) if settings.otlp_certificate else None,
        client_key=str(settings.otlp_client_key) if settings.otlp_client_key else None,
        client_certificate=str(settings.otlp_client_certificate) if settings.otlp_client_certificate else None,
    )


def export_targets(settings: Settings) -> dict[str, ExportTarget]:
    """One export target per tenant: its transport and its resource."""
    tenants: list[TenantSettings | None] = [None, *settings.tenants]
    targets = {}
    for tenant in tenants:
        attributes = dict(settings.resource_attributes)
        service_name = settings.service_name
        if tenant is not None:
            attributes.update(tenant.resource_attributes)
            service_name = tenant.resource_attributes.get("service.name", service_name)
        project = attributes.pop("openinference.project.name", None) or settings.project_name or service_name
        resource = build_resource(service_name, project, attributes)
        name = tenant.name if tenant else DEFAULT_TENANT
        targets[name] = ExportTarget(make_transport(transport_config(settings, tenant)), resource)
    return targets


def build_store(settings: Settings) -> Store:
    """The durable store the settings describe (not opened)."""
    return Store(
        settings.store_path,
        max_bytes=settings.store_max_bytes,
        max_batches=settings.store_max_batches,
        sync=settings.store_sync,
        secure_delete=settings.store_secure_delete,
    )


def build_delivery(settings: Settings, store: Store, metrics: Metrics, idle_poll_s: float = 1.0) -> Delivery:
    """The export loop for ``settings`` (not started)."""
    return Delivery(
        store,
        export_targets(settings),
        mapping_options(settings),
        DeliveryConfig(
            max_batches_per_request=settings.export_max_batches_per_request,
            max_request_bytes=settings.export_max_request_bytes,
            max_claim_bytes=settings.export_max_claim_bytes,
            initial_backoff_s=settings.retry_initial_backoff,
            max_backoff_s=settings.retry_max_backoff,
            lease_s=2 * settings.otlp_timeout / 1000 + 30,
            idle_poll_s=idle_poll_s,
            scope_version=package_version(),
            dedupe_window_s=settings.dedupe_window,
            dedupe_max_runs=settings.dedupe_max_runs,
        ),
        metrics,
    )


# --- the export process ---------------------------------------------------------------------------
def export_process_main(arguments: str, parent_pid: int, index: int) -> None:
    """Body of one export process: the ``Delivery`` loop in the main thread until SIGTERM.

    SIGINT is ignored: Ctrl-C reaches the whole process group, and ``serve`` stops its export
    processes itself, after the workers. An export process also stops when the ``serve`` process that
    started it is gone (killed with SIGKILL, say), so none outlives its service.
    """
    from adapter.cli import settings_from
    from adapter.logs import configure_logging
    from adapter.selftrace import tracer_for

    settings = settings_from(arguments)
    configure_logging(settings.log_level)
    if settings.export_nice:
        os.nice(settings.export_nice)
    store = build_store(settings)
    delivery = build_delivery(settings, store, Metrics(store, CollectorRegistry()), EXPORT_PROCESS_POLL_S)
    delivery.tracer, provider = tracer_for(settings)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        delivery.halt()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    done = threading.Event()
    threading.Thread(target=_watch_parent, args=(parent_pid, delivery, done), name="parent-watch", daemon=True).start()
    store.open()
    gc.freeze()  # as in the workers: what lives as long as the process stays out of the collector's scans
    # No request waits on this process, so it can collect less often: mapping allocates many short-lived
    # objects (few cycles). Export loop alone, 22-run batches: 125-137 -> 122-128 µs per run (3 pairs).
    gc.set_threshold(*EXPORT_GC_THRESHOLDS)
    log.info("export process started", extra={"index": index, "pid": os.getpid(), "nice": settings.export_nice})
    try:
        delivery.run()
    finally:
        done.set()
        delivery.close()
        store.close()
        if provider is not None:
            provider.shutdown()
    log.info("export process stopped", extra={"index": index, "pid": os.getpid()})


def _watch_parent(parent_pid: int, delivery: Delivery, done: threading.Event) -> None:
    while not done.wait(PARENT_CHECK_S):
        if os.getppid() != parent_pid:
            log.warning("the serve process is gone; stopping", extra={"parent_pid": parent_pid})
            delivery.halt()
            return


# --- in the serve process -------------------------------------------------------------------------
@dataclass
class _Slot:
    index: int
    process: BaseProcess
    started: float
    failures: int = 0
    restart_at: float = 0.0


class ExportProcesses:
    """Starts ``count`` export processes, restarts one that exits while the service runs, stops them.

    A process that dies within a minute of its start is restarted after a delay that doubles with each
    such death (``RESTART_BACKOFF_S``), so a configuration that cannot work does not spin.
    """

    def __init__(self, count: int, arguments: str, check_s: float = 0.5) -> None:
        self.count = count
        self.arguments = arguments
        self._check_s = check_s
        self._context = multiprocessing.get_context("spawn")
        self._slots: list[_Slot] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._monitor: threading.Thread | None = None

    def start(self) -> None:
        """Start the processes and the thread that watches them."""
        with self._lock:
            self._slots = [self._spawn(index) for index in range(self.count)]
        self._monitor = threading.Thread(target=self._watch, name="dynamiq-otel-export-monitor", daemon=True)
        self._monitor.start()

    def _spawn(self, index: int, failures: int = 0) -> _Slot:
        process = self._context.Process(
            target=export_process_main,
            args=(self.arguments, os.getpid(), index),
            name=f"dynamiq-otel-export-{index}",
        )
        process.start()
        return _Slot(index, process, time.monotonic(), failures)

    def _watch(self) -> None:
        while not self._stopping.wait(self._check_s):
            with self._lock:
                if self._stopping.is_set():
                    return
                for position, slot in enumerate(self._slots):
                    if slot.process.is_alive():
                        continue
                    now = time.monotonic()
                    if not slot.restart_at:
                        quick = now - slot.started < 60
                        slot.failures = slot.failures + 1 if quick else 0
                        first, largest = RESTART_BACKOFF_S
                        delay = min(first * 2 ** (slot.failures - 1), largest) if slot.failures else 0.0
                        slot.restart_at = now + delay
                        log.log(
                            logging.WARNING if slot.process.exitcode == 0 else logging.ERROR,
                            "export process exited; restarting it",
                            extra={"index": slot.index, "pid": slot.process.pid,
                                   "exit_code": slot.process.exitcode, "restart_in_s": delay},
                        )  # fmt: skip
                    if now >= slot.restart_at:
                        self._slots[position] = self._spawn(slot.index, slot.failures)

    def stop(self, grace_s: float) -> None:
        """SIGTERM each process; wait up to ``grace_s`` for the exports under way, then SIGKILL.

        A batch whose export is cut short stays in the store and is sent after the next start.
        """
        self._stopping.set()
        if self._monitor is not None:
            self._monitor.join()
        with self._lock:
            processes = [slot.process for slot in self._slots]
        for process in processes:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + grace_s
        for process in processes:
            process.join(max(deadline - time.monotonic(), 0))
            if process.is_alive():
                log.warning("export process still busy at shutdown; killed", extra={"pid": process.pid})
                process.kill()
                process.join()
