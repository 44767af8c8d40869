"""What a worker serves: decided from its queues and the declared processors, with no I/O.

A worker started with `-Q face,motion` serves the processors whose queue it consumes and that
can run here; one that lacks a package or a setting is refused with the reason, and its queue
left to workers that can run it. A queue that no processor (nor the maintenance checks) uses is
an error: the worker would sit idle. The worker acts on the plan in `detektr.worker_hooks`.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .celeryconfig import MAINTENANCE_QUEUE
from .processor import ProcessorSpec

DEFAULT_NODE_PREFIX = "celery@"
"""Celery's default worker name is celery@<host>: two such workers on one host would be one to detektr."""


@dataclass(frozen=True)
class ServingPlan:
    """The processors a worker serves, those it refuses (with why), and queues nobody uses."""

    serve: tuple[ProcessorSpec, ...]
    refused: dict[str, str] = field(default_factory=dict)
    """Processor name -> why this worker cannot run it."""
    refused_queues: frozenset[str] = frozenset()
    unknown_queues: tuple[str, ...] = ()
    known_queues: tuple[str, ...] = ()
    maintenance: bool = False

    @property
    def queues_to_leave(self) -> list[str]:
        """Queues of refused processors that no served processor shares: the worker stops consuming them."""
        return sorted(self.refused_queues - {spec.queue for spec in self.serve})

    def problem(self) -> str:
        """Why the worker must not start ("" when it may): nothing to serve, or a queue nobody uses."""
        known = ", ".join(self.known_queues) or "none declared"
        if self.unknown_queues:
            return (f"no processor uses the queue {', '.join(self.unknown_queues)} (processor queues: {known}; "
                    f"checks: {MAINTENANCE_QUEUE}); name one with -Q, or declare it in a module listed in "
                    "DETEKTR_PROCESSORS")
        if not self.serve and not self.maintenance:
            if self.refused:
                return "nothing to serve: " + "; ".join(f"processor {name} {why}" for name, why in self.refused.items())
            return f"no processor queue to serve; name one with -Q (processor queues: {known})"
        return ""


def plan_serving(queues: Iterable[str], specs: Iterable[ProcessorSpec], environ: Mapping[str, str]) -> ServingPlan:
    """The plan for a worker consuming `queues`, given the processors declared in it and its environment."""
    queues = sorted(set(queues))
    specs = list(specs)
    by_queue: dict[str, list[ProcessorSpec]] = {}
    for spec in specs:
        by_queue.setdefault(spec.queue, []).append(spec)
    serve, refused, refused_queues = [], {}, set()
    for queue in queues:
        for spec in by_queue.get(queue, []):
            why = spec.cannot_run_because(environ)
            if why:
                refused[spec.name] = why
                refused_queues.add(queue)
            else:
                serve.append(spec)
    unknown = tuple(queue for queue in queues if queue not in by_queue and queue != MAINTENANCE_QUEUE)
    return ServingPlan(
        serve=tuple(serve), refused=refused, unknown_queues=unknown, known_queues=tuple(sorted(by_queue)),
        maintenance=MAINTENANCE_QUEUE in queues, refused_queues=frozenset(refused_queues),
    )


def is_default_node_name(name: str, host: str | None = None) -> bool:
    """True for Celery's default worker name, celery@<this host>."""
    return name == f"{DEFAULT_NODE_PREFIX}{host or socket.gethostname()}"


def unique_node_name(queues: Iterable[str], pid: int, host: str | None = None) -> str:
    """A worker name no other worker on this host has: its queues and its process id, e.g. face-4242@host."""
    return f"{'+'.join(sorted(set(queues))) or 'celery'}-{pid}@{host or socket.gethostname()}"


def name_taken_by(heartbeat: Mapping[str, object] | None, machine: str, pid: int, pid_alive: bool) -> str:
    """Whether a live heartbeat under our name belongs to another worker: "" if not, else who holds it.

    The same machine and pid is us restarted (a container's pid 1); the same machine with a pid
    that no longer runs is a worker that died and has not expired yet.
    """
    if not heartbeat:
        return ""
    other_machine, other_pid = heartbeat.get("machine"), heartbeat.get("pid")
    if other_machine == machine and (other_pid == pid or not pid_alive):
        return ""
    return f"pid {other_pid} on {other_machine}"
