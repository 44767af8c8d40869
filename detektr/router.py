"""Routing decisions: for each capability a frame asks for, pick one live processor.

Plain code with no I/O. Ingest builds a `RoutingTable` from a snapshot of live processors and
queue depths, then asks the `Router` for each frame's complete `FramePlan`: which processors,
on which queue (a worker's own queue for affinity processors), and which gated processors ride
along on a gating processor's task. Ingest only stores, holds and sends what the plan says. The
table counts what it assigned since the snapshot, so `least_loaded` stays balanced within a batch.

Strategies:
- `round_robin`: candidates in turn.
- `least_loaded` (default): lowest queue depth relative to capacity; ties rotate.
- `affinity`: rendezvous (highest-random-weight) hashing of the camera over candidates, so a
  camera sticks to one processor and losing a processor moves only that processor's cameras.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .registry import LiveProcessor

STRATEGIES = ("round_robin", "least_loaded", "affinity")


@dataclass
class Candidate:
    """One live processor as the router sees it."""

    name: str
    capacity: int
    depth: int = 0
    routing: str | None = None

    @property
    def load(self) -> float:
        """Queue depth relative to capacity."""
        return self.depth / self.capacity


@dataclass
class RoutingTable:
    """Live processors by capability, with the strategy each capability uses."""

    by_capability: dict[str, list[Candidate]]
    strategy: dict[str, str]
    processors: dict[str, LiveProcessor] = field(default_factory=dict)
    """The live processors by name (queues, own queues, routing), for the plan."""
    gated_by: dict[str, str | None] = field(default_factory=dict)
    """Which processor each one waits on: its declaration, overridden by DETEKTR_GATES."""
    blocked: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Capability -> (processor, why) for live processors left out because their circuit breaker is open."""

    @classmethod
    def from_live(
        cls,
        live: Mapping[str, LiveProcessor],
        depths_by_queue: Mapping[str, int],
        default_strategy: str,
        gate_overrides: Mapping[str, str] | None = None,
        open_breakers: Mapping[str, str] | None = None,
    ) -> RoutingTable:
        """Build from live processors, their shared queues' depths, DETEKTR_GATES ("none" turns a gate off),
        and the processors whose circuit breaker is open (left out, with why)."""
        open_breakers = open_breakers or {}
        usable = {name: p for name, p in live.items() if name not in open_breakers}
        table = cls.build(
            ((p.name, p.capabilities, p.capacity, p.routing) for p in usable.values()),
            {p.name: depths_by_queue.get(p.queue, 0) for p in usable.values()},
            default_strategy,
        )
        table.blocked = {capability: (name, open_breakers[name]) for name in sorted(open_breakers)
                         if name in live for capability in live[name].capabilities}
        table.processors = dict(usable)
        table.gated_by = {name: p.gated_by for name, p in live.items()}
        for name, gate in (gate_overrides or {}).items():
            table.gated_by[name] = None if gate.lower() == "none" else gate
        return table

    @classmethod
    def build(
        cls,
        processors: Iterable[tuple[str, Iterable[str], int, str | None]],
        depths: Mapping[str, int],
        default_strategy: str,
    ) -> RoutingTable:
        """Build from (name, capabilities, capacity, routing) tuples and queue depths by processor."""
        if default_strategy not in STRATEGIES:
            raise ValueError(f"unknown routing strategy {default_strategy!r}")
        by_capability: dict[str, list[Candidate]] = {}
        for name, capabilities, capacity, routing in sorted(processors, key=lambda p: p[0]):
            if capacity <= 0:
                continue
            candidate = Candidate(name, capacity, depths.get(name, 0), routing)
            for capability in capabilities:
                by_capability.setdefault(capability, []).append(candidate)
        strategy = {}
        for capability, candidates in by_capability.items():
            declared = {c.routing for c in candidates if c.routing}
            strategy[capability] = declared.pop() if len(declared) == 1 else default_strategy
        return cls(by_capability, strategy)

    @property
    def capabilities(self) -> tuple[str, ...]:
        """Every capability that a live processor offers."""
        return tuple(self.by_capability)

    def why_unavailable(self, capabilities: Iterable[str]) -> str:
        """The dead-letter reason for a frame whose `capabilities` no usable processor offers."""
        reasons = []
        for capability in capabilities:
            if capability in self.blocked:
                name, why = self.blocked[capability]
                reasons.append(f"circuit open for {name}, the processor of {capability} ({why})")
            else:
                reasons.append(f"no live processor offers {capability}")
        return "; ".join(reasons) + f" (live capabilities: {', '.join(self.capabilities) or 'none'})"


@dataclass(frozen=True)
class RouteDecision:
    """Where one frame goes: processor names (each once) and the capabilities nobody offers."""

    processors: tuple[str, ...]
    unavailable: tuple[str, ...]


@dataclass(frozen=True)
class Destination:
    """One task a frame goes into: the processor, its queue, and the (processor, queue) pairs after its gate."""

    processor: str
    queue: str
    followers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class FramePlan:
    """Everything that happens to one frame: its tasks, the capabilities nobody offers, gates skipped."""

    destinations: tuple[Destination, ...]
    unavailable: tuple[str, ...] = ()
    ungated: tuple[str, ...] = ()
    """Gated processors sent directly because their gating processor has no live worker."""


@dataclass
class Router:
    """Chooses processors for frames; keeps only rotation counters and a hash cache."""

    max_cached_cameras: int = 10_000
    _turns: dict[str, int] = field(default_factory=dict)
    _scores: dict[str, dict[str, int]] = field(default_factory=dict)

    def route(self, table: RoutingTable, camera_id: str, capabilities: Iterable[str] | None) -> RouteDecision:
        """Pick one processor per requested capability (all live capabilities when None).

        A processor already chosen for this frame is reused for another capability it offers,
        so a frame never produces two tasks for the same processor. The chosen processors'
        depth in `table` is incremented.
        """
        wanted = table.capabilities if capabilities is None else capabilities
        chosen: list[str] = []
        unavailable: list[str] = []
        for capability in wanted:
            candidates = table.by_capability.get(capability)
            if not candidates:
                unavailable.append(capability)
                continue
            if any(c.name in chosen for c in candidates):
                continue
            pick = self.choose(table.strategy[capability], capability, camera_id, candidates)
            pick.depth += 1
            chosen.append(pick.name)
        return RouteDecision(tuple(chosen), tuple(unavailable))

    def plan(self, table: RoutingTable, camera_id: str, capabilities: Iterable[str] | None) -> FramePlan:
        """The complete plan for one frame: processors by capability, gates, and each task's queue."""
        decision = self.route(table, camera_id, capabilities)
        tasks, ungated = plan_gates(decision.processors, table.gated_by, table.processors)
        destinations = tuple(
            Destination(name, self.queue_for(table, name, camera_id),
                        tuple((f, self.queue_for(table, f, camera_id)) for f in followers))
            for name, followers in tasks.items()
        )
        return FramePlan(destinations, decision.unavailable, ungated)

    def queue_for(self, table: RoutingTable, processor: str, camera_id: str) -> str:
        """The queue of a processor's task: the own queue of the worker a camera sticks to, for affinity."""
        live = table.processors.get(processor)
        if live is None:
            return processor
        if live.routing == "affinity" and live.own_queues:
            return self.pick_worker(camera_id, list(live.own_queues))
        return live.queue

    def choose(self, strategy: str, capability: str, camera_id: str, candidates: list[Candidate]) -> Candidate:
        """Pick one candidate by strategy."""
        if len(candidates) == 1:
            return candidates[0]
        if strategy == "least_loaded":
            return self._least_loaded(capability, candidates)
        if strategy == "affinity":
            return self._affinity(camera_id, candidates)
        if strategy == "round_robin":
            turn = self._turns.get(capability, 0)
            self._turns[capability] = turn + 1
            return candidates[turn % len(candidates)]
        raise ValueError(f"unknown routing strategy {strategy!r}")

    def _least_loaded(self, capability: str, candidates: list[Candidate]) -> Candidate:
        lowest = min(c.depth / c.capacity for c in candidates)
        tied = [c for c in candidates if c.depth / c.capacity == lowest]
        if len(tied) == 1:
            return tied[0]
        turn = self._turns.get(capability, 0)
        self._turns[capability] = turn + 1
        return tied[turn % len(tied)]

    def _affinity(self, camera_id: str, candidates: list[Candidate]) -> Candidate:
        scores = self._scores.get(camera_id)
        if scores is None:
            if len(self._scores) >= self.max_cached_cameras:
                self._scores.clear()
            scores = self._scores[camera_id] = {}
        best, best_score = candidates[0], -1
        for candidate in candidates:
            score = scores.get(candidate.name)
            if score is None:
                score = scores[candidate.name] = rendezvous_score(camera_id, candidate.name)
            if score > best_score:
                best, best_score = candidate, score
        return best

    def pick_worker(self, camera_id: str, workers: list[tuple[str, str]]) -> str:
        """For an affinity processor: the own queue of the worker this camera sticks to.

        `workers` holds (hostname, own queue) pairs; rendezvous hashing, so losing a worker moves
        only that worker's cameras.
        """
        best = max(workers, key=lambda worker: rendezvous_score(camera_id, worker[0]))
        return best[1]


def plan_gates(
    chosen: Iterable[str], gated_by: Mapping[str, str | None], live: Iterable[str]
) -> tuple[dict[str, tuple[str, ...]], tuple[str, ...]]:
    """Turn chosen processors into tasks to send now, each with the processors that wait on its gate.

    A processor gated by a live gating processor is not sent now: it rides on the gating
    processor's task (which is added when the frame did not ask for it). A processor whose gating
    processor is not live is sent directly (failing open: a missing motion detector must not
    hide faces); those are returned second.
    """
    live = set(live)
    plan: dict[str, list[str]] = {}
    ungated: list[str] = []
    for name in chosen:
        plan.setdefault(name, [])
    for name in list(plan):
        gate = gated_by.get(name)
        if gate is None:
            continue
        if gate in live:
            del plan[name]
            plan.setdefault(gate, []).append(name)
        else:
            ungated.append(name)
    return {name: tuple(followers) for name, followers in plan.items()}, tuple(ungated)


FINER_TASKS_PER_PROCESS = 4
"""Tasks per worker process that frames released before their hold filled are spread over (`task_sizes`)."""
FINER_MIN_FRAMES = 16
"""Fewest frames of a task that such frames are split into, when there are enough for two."""


def task_sizes(frames: int, capacity: int, max_per_task: int, finer: bool = False) -> list[int]:
    """How many frames each task carries when `frames` frames for one queue leave together.

    One frame per task when frames arrive one at a time (a live camera: no added latency). Under
    a backlog, frames share tasks, which spreads the fixed cost of a task (Celery's message
    handling, the acknowledgement, Redis round trips) over several frames; but never fewer tasks
    than the queue's capacity (so every worker process gets work) and never more than
    `max_per_task` frames in one. Sizes differ by at most one.

    `finer` is for frames that leave before a full hold (the queue is running short, or the input
    slowed or ended, as at the end of a backlog): they go in up to `FINER_TASKS_PER_PROCESS` tasks
    per process of at least `FINER_MIN_FRAMES` frames, so that whichever process is free first
    takes the next part and the processes run out of work together, not one a full task after
    the other.
    """
    if frames <= 0:
        return []
    fewest = min(frames, max(1, capacity))
    if finer:
        fewest = max(fewest, min(frames // FINER_MIN_FRAMES, FINER_TASKS_PER_PROCESS * max(1, capacity)))
    tasks = max(-(-frames // max(1, max_per_task)), fewest)
    size, bigger = divmod(frames, tasks)
    return [size + 1] * bigger + [size] * (tasks - bigger)


def queue_capacity(live: LiveProcessor | None, queue: str) -> int:
    """Worker processes consuming `queue`: the processor's capacity, shared by its workers' own queues."""
    if live is None:
        return 1
    if queue != live.queue and live.own_queues:
        return max(1, live.capacity // len(live.own_queues))
    return live.capacity


def keep_holding(waiting_tasks: int, capacity: int, held_frames: int, max_per_task: int, held_for_s: float,
                 max_hold_s: float) -> bool:
    """Whether ingest keeps holding the frames it holds for a queue, instead of sending them now.

    Frames are held only while every worker process of the queue has a task waiting already
    (they would wait in the queue anyway), until there are enough for a full task per process,
    and never longer than `max_hold_s`. Held frames then leave in fewer, fuller tasks.
    """
    return (
        max_hold_s > 0
        and held_for_s < max_hold_s
        and waiting_tasks >= max(1, capacity)
        and not hold_is_full(held_frames, capacity, max_per_task)
    )


def hold_is_full(held_frames: int, capacity: int, max_per_task: int) -> bool:
    """Whether ingest holds a full task for every worker process of the queue (they leave in full tasks)."""
    return held_frames >= max(1, max_per_task) * max(1, capacity)


def rendezvous_score(key: str, node: str) -> int:
    """Highest-random-weight score of `key` on `node` (stable across processes and machines)."""
    digest = hashlib.blake2b(f"{key}\x00{node}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def celery_priority(frame_priority: int) -> int:
    """Map frame priority (0-9, 9 most urgent) to Celery's Redis priority (0 served first)."""
    return 9 - max(0, min(9, frame_priority))
