"""Ray, the optional engine behind ``--engine ray``: connect to (or start) a Ray cluster and spread work over
actors that each load their heavy state once.

Both halves use it the same way: :mod:`maskbench.data.synth_ray` (``maskbench synth``: one
:class:`~maskbench.data.synth.MaskSynthesizer` per actor, blocks of source items) and
:mod:`maskbench.bench.evaluate_ray` (``maskbench evaluate``: one method and its scoring networks per actor,
the batches of a run's plan). The driver (the process that runs the command) keeps the bookkeeping: it writes
the resume log or the finished batches as results come back, so what finished is never lost, and it computes
whatever is computed once over the whole set.

Ray is an optional extra (``pip install -e ".[ray]"``); without it :func:`import_ray` raises
:class:`RayUnavailableError`, which the command line prints as one line.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from .errors import MaskbenchError, first_line

__all__ = ["RAY_INSTALL", "RayUnavailableError", "RayEngine", "ActorHost", "import_ray", "ENGINES"]

#: The command that installs the extra.
RAY_INSTALL = 'pip install -e ".[ray]"'
#: The values of ``--engine``.
ENGINES = ("local", "ray")


class RayUnavailableError(MaskbenchError, ImportError):
    """``--engine ray`` was asked for and Ray is not installed (or the cluster cannot be reached)."""


def import_ray():
    """The ``ray`` module.

    Raises:
        RayUnavailableError: Ray is not installed; the message names the command that installs it.
    """
    try:
        import ray
    except ImportError:
        raise RayUnavailableError(f"--engine ray needs Ray, which is not installed here: {RAY_INSTALL}") from None
    return ray


@dataclass
class RayEngine:
    """Where and how work runs on Ray.

    Args:
        address: a running cluster (``"auto"``: the one this machine belongs to, started by ``ray start``;
            ``"ray://HOST:PORT"``: Ray Client), or None to start a local Ray on this machine (or to use the
            one this process already started).
        num_cpus: CPUs of a local Ray started here (default: this machine's cores, or ``actors`` if more).
        actors: how many actors to start (default, and at most: one per GPU of the cluster when the work uses
            GPUs, else one per CPU).
        max_restarts: dead actors replaced in one :meth:`map` (their unfinished calls run again on the new one)
            before the run gives up.

    Attributes:
        startup_s: seconds :meth:`connect` took (starting or joining Ray).
        actors_started: actors started by :meth:`map`, replacements not counted.
        restarts: dead actors replaced.
    """

    address: str | None = None
    num_cpus: int | None = None
    actors: int | None = None
    max_restarts: int = 3
    startup_s: float = 0.0
    actors_started: int = 0
    restarts: int = 0
    _started_here: bool = field(default=False, repr=False)

    def connect(self):
        """Join the cluster at :attr:`address`, or start a local Ray (quiet: errors only, no dashboard);
        nothing happens when this process is connected already. Returns the ``ray`` module.

        Raises:
            RayUnavailableError: Ray is not installed, or the cluster at ``address`` cannot be reached.
        """
        ray = import_ray()
        if ray.is_initialized():
            return ray
        t0 = time.perf_counter()
        kwargs: dict[str, Any] = {"logging_level": logging.ERROR, "configure_logging": True}
        try:
            if self.address:
                ray.init(address=self.address, **kwargs)
            else:
                cpus = self.num_cpus or max(os.cpu_count() or 1, self.actors or 0)
                ray.init(num_cpus=cpus, include_dashboard=False, **kwargs)
                self._started_here = True
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray"
            raise RayUnavailableError(f"cannot start or join {where}: {first_line(e)}") from None
        self.startup_s = time.perf_counter() - t0
        return ray

    def close(self) -> None:
        """Shut down the local Ray this engine started (a cluster joined by address is left running)."""
        if self._started_here:
            import_ray().shutdown()
            self._started_here = False

    def resources(self) -> dict[str, float]:
        """The cluster's total resources (``CPU``, ``GPU``, ...), connecting first."""
        return dict(self.connect().cluster_resources())

    def map(self, actor_class: type, init_args: tuple, items: Iterable[Any], *, method: str = "run",
            num_cpus: float = 1, num_gpus: float = 0, in_flight: int = 2) -> Iterator[tuple[int, Any]]:
        """Run ``actor.<method>(item)`` for every item on a pool of actors of ``actor_class``; yield
        ``(position of the item, result)`` as each finishes (not in item order).

        Args:
            actor_class: a plain class; each actor is ``actor_class(init_args)`` (its heavy state loaded once).
            init_args: sent once to the object store and shared by every actor (and its restarts).
            items: the work, each small enough to send with its call.
            method: the method run per item.
            num_cpus, num_gpus: what each actor reserves.
            in_flight: calls queued per actor, so an actor never waits for the driver.

        An actor that dies (a crashed process, a lost node) is replaced by a new one, which loads its state again,
        up to :attr:`max_restarts` times, and its unfinished calls run again (the driver does this rather than
        Ray's own ``max_restarts``, which cannot promise to find the shared arguments again); a call that
        raises raises its own exception here. The actors are killed when the iteration ends, also on an error
        or when the caller stops early.
        """
        ray = self.connect()
        items = list(items)
        if not items:
            return
        res = ray.cluster_resources()
        slots = int(res.get("GPU", 0) // num_gpus) if num_gpus else int(res.get("CPU", 1) // max(num_cpus, 1e-9))
        n = max(1, min(self.actors or slots, slots or 1, len(items)))  # no more than can run at once
        remote = ray.remote(ActorHost).options(num_cpus=num_cpus, num_gpus=num_gpus)
        shared = [ray.put(tuple(init_args))]  # held here to the end: a replacement actor reads it again
        pool = [remote.remote(actor_class, shared) for _ in range(n)]
        self.actors_started += n
        generation = [0] * n
        queue = list(enumerate(items))
        queue.reverse()  # popped from the end: item order
        pending: dict[Any, tuple[int, int, int]] = {}  # call -> (item position, actor, its generation)
        load = [0] * n
        try:
            while queue or pending:
                for a in range(n):
                    while queue and load[a] < in_flight:
                        pos, item = queue.pop()
                        pending[pool[a].call.remote(method, item)] = (pos, a, generation[a])
                        load[a] += 1
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    pos, a, gen = pending.pop(ref)
                    load[a] -= 1
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayActorError:  # the actor died: its calls run again on a new one
                        queue.append((pos, items[pos]))
                        if gen == generation[a]:
                            if self.restarts >= self.max_restarts:
                                raise
                            self.restarts += 1
                            ray.kill(pool[a], no_restart=True)
                            pool[a] = remote.remote(actor_class, shared)
                            generation[a] += 1
                        continue
                    except ray.exceptions.RayTaskError as e:  # the work's own error, as itself
                        cause = getattr(e, "cause", None)
                        if isinstance(cause, Exception):
                            raise cause from None
                        raise
                    yield pos, result
        finally:
            for actor in pool:
                ray.kill(actor, no_restart=True)


class ActorHost:
    """The Ray actor :meth:`RayEngine.map` starts: it builds ``actor_class(init_args)`` and runs its methods.

    Args:
        actor_class: the plain class holding the actor's state.
        shared: ``[reference to init_args]``: nested in a list, so the arguments stay in the object store and
            each actor (and each restart) fetches them itself.
    """

    def __init__(self, actor_class: type, shared: list):
        import ray

        self.obj = self.error = None
        try:
            self.obj = actor_class(ray.get(shared[0]))
        except Exception as e:  # noqa: BLE001 - raised by each call, as the work's own error (not a dead actor)
            self.error = e

    def call(self, method: str, item: Any) -> Any:
        """``actor.<method>(item)``; an error of the constructor is raised here."""
        if self.error is not None:
            raise self.error
        return getattr(self.obj, method)(item)
