"""The waves of a fleet update: in which order UpdateAll queues its machines' updates,
and which update each one follows.

A wave is a profile: the admin's choice for a machine, else what its root names. Its
leader goes first and the others follow it: with builders off, they install what the
leader compiled; with [updates] canary, they wait for the leader and are held when it
fails. Only a machine whose profile the admin chose, or a trusted one, leads a wave: a
container that names another's profile can follow its canary, never become it and hold
the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gnspawn import machines
from gnspawn.config import Config
from gnspawn.jobs.record import Job
from gnspawn.machines import Machine


class Waves:
    """The leaders of one UpdateAll's waves, as its updates are queued."""

    def __init__(
        self, config: Config, found: Mapping[str, Machine], *, canary: bool, pretend: bool
    ) -> None:
        self._config = config
        self._found = found
        self._canary = canary
        # With builders, the builder jobs order the compiling; a pretend compiles nothing.
        self._waves = (canary or not config.portage.builders) and not pretend
        self._leaders: dict[str, Job] = {}

    def order(self, names: Iterable[str]) -> list[str]:
        """Trusted machines first, then those whose profile the admin chose: the first
        of a profile leads its wave, and no machine goes before its leader."""

        def key(name: str) -> tuple[bool, bool]:
            machine = self._found.get(name)
            chosen = machine is not None and machines.chosen_profile(self._config, machine)
            return not self._config.machine(name).trusted, not chosen

        return sorted(names, key=key)

    def wave(self, machine: Machine) -> tuple[str, int]:
        """The (mounted) machine's wave ("" when there are none) and the job of its
        leader that its update follows (0: none yet, or none to follow)."""
        if not self._waves or machine.root is None:
            return "", 0
        chosen = machines.chosen_profile(self._config, machine)
        profile = chosen or machines.profile_of(self._config, machine.root)
        leader = self._leaders.get(profile)
        return profile, leader.id if leader is not None else 0

    def queued(self, machine: Machine, wave: str, job: Job) -> None:
        """The machine's update is queued: it leads its wave if none does yet and it
        may (a trusted machine; with a canary, one whose profile the admin chose)."""
        if not wave:
            return
        chosen = bool(machines.chosen_profile(self._config, machine))
        if (self._canary and chosen) or self._config.machine(machine.name).trusted:
            self._leaders.setdefault(wave, job)
