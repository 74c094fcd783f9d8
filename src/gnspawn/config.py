"""The configuration file, parsed once at start into frozen dataclasses."""

from __future__ import annotations

import dataclasses
import enum
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

DEFAULT_PATH = Path("/etc/gnspawn/gnspawn.toml")


class ConfigError(Exception):
    """The configuration is unusable; the message names file, line and key."""

    def __init__(self, path: Path, key: str, problem: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {key}: {problem}" if key else f"{where}: {problem}")
        self.path, self.key, self.problem, self.line = path, key, problem, line


@dataclasses.dataclass(frozen=True)
class DaemonConfig:
    state_directory: Path = Path("/var/lib/gnspawn")


@dataclasses.dataclass(frozen=True)
class StorageConfig:
    dataset: str = "zpool/machines"
    machines_directory: Path = Path("/var/lib/machines")
    keep_snapshots: int = 5


@dataclasses.dataclass(frozen=True)
class PortageConfig:
    emerge: str = "emerge"
    default_profile: str = "default/linux/amd64/23.0/systemd"
    repos: tuple[Path, ...] = (Path("/var/db/repos/gentoo"),)
    binhost: str = ""
    """PORTAGE_BINHOST of new containers (old setups; binrepos is the signed way)."""
    binrepos: tuple[str, ...] = ()
    """Binhosts (URIs) whose signed packages the builder roots fetch into PKGDIR."""
    features: tuple[str, ...] = ("buildpkg", "binpkg-multi-instance", "getbinpkg")
    update_args: tuple[str, ...] = ("--update", "--deep", "--newuse", "--with-bdeps=y", "@world")
    """What an admin runs: @world holds @system and @profile too; --deep reaches the
    dependencies no set names (a library's fixes), --newuse follows changed USE flags."""
    build_args: tuple[str, ...] = ("--usepkg", "@system")
    """A build runs these twice: with --nodeps first (it breaks build cycles), then as is."""
    builders: bool = True
    """Binary packages come from a builder root per profile, which gnspawn keeps."""
    distdir: Path = Path("/var/cache/distfiles")
    pkgdir: Path = Path("/var/cache/binpkgs")
    make_conf: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """More variables for a new container's make.conf."""
    environment: Mapping[str, str] = dataclasses.field(default_factory=dict)


class UnreachablePolicy(enum.StrEnum):
    """What a builder job does when no binrepo answers."""

    COMPILE = "compile"
    """It builds what the machines need itself, as it would without a binhost."""
    HOLD = "hold"
    """It ends held, and the machines' updates that follow it with it."""


@dataclasses.dataclass(frozen=True)
class BinhostConfig:
    publish: bool = False
    """Sign what this host's emerges publish to PKGDIR and keep its index current, for
    other hosts to fetch."""
    signing_key: str = ""
    """The key that signs (BINPKG_GPG_SIGNING_KEY): a fingerprint, key id or address."""
    signing_home: Path = Path("/root/.gnupg")
    """The GnuPG home that holds it, on the host (BINPKG_GPG_SIGNING_GPG_HOME)."""
    keys: tuple[Path, ...] = ()
    """Public keys (files) whose signatures the packages from [portage] binrepos need."""
    unreachable: UnreachablePolicy = UnreachablePolicy.COMPILE


@dataclasses.dataclass(frozen=True)
class JobsConfig:
    max_parallel: int = 2
    stop_timeout: float = 10.0
    """Seconds between SIGTERM and SIGKILL when a running emerge is stopped."""
    history: int = 1000
    """Finished jobs kept in the database."""


@dataclasses.dataclass(frozen=True)
class NspawnConfig:
    settings_directory: Path = Path("/etc/systemd/nspawn")
    bind_ro: tuple[Path, ...] = (Path("/var/db/repos"),)
    bind: tuple[Path, ...] = (Path("/var/cache/distfiles"),)
    """Never the shared PKGDIR, which every machine gets read-only."""
    bridge: str = ""
    enable: bool = False


class UpdatePolicy(enum.StrEnum):
    """What a scheduled update of all machines does."""

    NONE = "none"
    CHECK = "check"
    """Pretend, and report what is pending."""
    APPLY = "apply"


class DepcleanPolicy(enum.StrEnum):
    """What an update does with the packages nothing needs any more."""

    OFF = "off"
    REPORT = "report"
    """emerge --depclean --pretend: the packages it would remove go into the Notices."""
    APPLY = "apply"
    """emerge --depclean in the update's snapshot."""


class ConfigFilesPolicy(enum.StrEnum):
    """What an update does with the new config files a merge leaves beside the admin's
    (._cfg????_NAME under CONFIG_PROTECT)."""

    KEEP = "keep"
    """Left in place, each in the job's Notices and the machine's Attention."""
    REPLACE = "replace"
    """The new file goes in; the admin's is kept beside it as ._gnspawn-JOB_NAME."""
    MERGE = "merge"
    """A three-way merge with the previous package's default from PKGDIR, the admin's
    file kept as with replace; kept (as with keep) when it cannot be merged cleanly."""


class NewsPolicy(enum.StrEnum):
    """What an update does when the machine has unread news items relevant to it."""

    REPORT = "report"
    """Each item goes into the job's Notices and the machine's Attention; the update
    goes on."""
    HOLD = "hold"
    """The update ends held, changing nothing, until the items are read
    (MarkNewsRead, `gnctl news NAME --read`)."""


@dataclasses.dataclass(frozen=True)
class UpdatesConfig:
    policy: UpdatePolicy = UpdatePolicy.APPLY
    """What a scheduled update-all does: none, check (pretend and report) or apply."""
    restart: bool = False
    """Restart a running container whose update changed something."""
    sync: bool = False
    """A scheduled update-all syncs the repositories first; its updates wait for that."""
    depclean: DepcleanPolicy = DepcleanPolicy.OFF
    config_files: ConfigFilesPolicy = ConfigFilesPolicy.KEEP
    news: NewsPolicy = NewsPolicy.REPORT
    health: tuple[tuple[str, ...], ...] = ()
    """Commands run inside a container after an update changed it; one that fails
    rolls the update back."""
    health_timeout: float = 120.0
    """Seconds each health check (and a restarted container's settling) may take."""
    canary: bool = True
    """UpdateAll: the first machine of each profile updates alone first, and when it
    fails the others of its profile are held."""


@dataclasses.dataclass(frozen=True)
class SandboxConfig:
    bwrap: str = "bwrap"
    """bubblewrap, which confines every process that touches a machine's root."""
    setpriv: str = "setpriv"
    """util-linux's setpriv, which bounds the capabilities of what runs confined."""
    hide: tuple[Path, ...] = ()
    """More host directories the confined processes must not see."""


@dataclasses.dataclass(frozen=True)
class MachineConfig:
    profile: str = ""
    trusted: bool = False
    """Its emerges write the shared PKGDIR: what it builds, the others may install."""
    health: tuple[tuple[str, ...], ...] | None = None
    """Its own health checks instead of [updates] health."""


@dataclasses.dataclass(frozen=True)
class Config:
    path: Path = DEFAULT_PATH
    daemon: DaemonConfig = DaemonConfig()
    storage: StorageConfig = StorageConfig()
    portage: PortageConfig = PortageConfig()
    jobs: JobsConfig = JobsConfig()
    nspawn: NspawnConfig = NspawnConfig()
    updates: UpdatesConfig = UpdatesConfig()
    sandbox: SandboxConfig = SandboxConfig()
    binhost: BinhostConfig = BinhostConfig()
    machines: Mapping[str, MachineConfig] = dataclasses.field(default_factory=dict)

    def machine(self, name: str) -> MachineConfig:
        """The [machines.NAME] settings of a machine, defaults where it has none."""
        return self.machines.get(name) or MachineConfig()

    def health(self, name: str) -> tuple[tuple[str, ...], ...]:
        """The health checks of machine `name`: its own, or [updates] health."""
        own = self.machine(name).health
        return self.updates.health if own is None else own


# One converter per setting: each takes the TOML value and returns the typed one,
# or raises ValueError with what was expected.

Converter = Callable[[Any], Any]


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def _nonempty(value: Any) -> str:
    if not _string(value):
        raise ValueError("expected a non-empty string")
    return str(value)


def _absolute(value: Any) -> Path:
    path = Path(_nonempty(value))
    if not path.is_absolute():
        raise ValueError("expected an absolute path")
    return path


def _dataset(value: Any) -> str:
    name = _nonempty(value)
    components = name.split("/")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.:-]*(/[A-Za-z0-9_.:-]+)*", name) or any(
        c in (".", "..") for c in components
    ):
        raise ValueError(f"{name!r} is not a ZFS dataset name")
    return name


def _count(minimum: int) -> Converter:
    def convert(value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"expected a whole number of at least {minimum}")
        return value

    return convert


def _seconds(value: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value < 86400:
        raise ValueError("expected a number of seconds, 0 or more and under a day")
    return float(value)


def _timeout(value: Any) -> float:
    """Seconds that something may take: 0 would fail it at once."""
    seconds = _seconds(value)
    if seconds == 0:
        raise ValueError("expected a number of seconds, more than 0 and under a day")
    return seconds


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def _choice(choices: type[enum.StrEnum]) -> Converter:
    def convert(value: Any) -> enum.StrEnum:
        if value not in list(choices):
            raise ValueError("expected one of " + ", ".join(choices))
        return choices(value)

    return convert


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of strings")
    return tuple(value)


def _commands(value: Any) -> tuple[tuple[str, ...], ...]:
    if not isinstance(value, list) or not all(
        isinstance(c, list) and c and all(isinstance(a, str) for a in c) and c[0] for c in value
    ):
        raise ValueError('expected a list of commands, each a list of strings: [["cmd", "arg"]]')
    return tuple(tuple(command) for command in value)


def _uris(value: Any) -> tuple[str, ...]:
    uris = _strings(value)
    for uri in uris:
        if not re.fullmatch(r"(https?|ftps?|file)://[^\s\0]+", uri):
            raise ValueError(f"{uri!r} is not a binhost URI (http://, https://, ftp://, file://)")
    return uris


def _key_id(value: Any) -> str:
    key = _string(value)
    if key and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9@._+-]*", key):
        raise ValueError(f"{key!r} is not a key fingerprint, id or e-mail address")
    return key


def _paths(value: Any) -> tuple[Path, ...]:
    return tuple(_absolute(v) for v in _strings(value))


def _environment(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError("expected a table of strings")
    bad = [k for k in value if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k)]
    if bad:
        raise ValueError(f"{bad[0]!r} is not an environment variable name")
    return dict(value)


SETTINGS: dict[str, dict[str, Converter]] = {
    "daemon": {"state_directory": _absolute},
    "storage": {
        "dataset": _dataset,
        "machines_directory": _absolute,
        "keep_snapshots": _count(1),
    },
    "portage": {
        "emerge": _nonempty,
        "default_profile": _nonempty,
        "repos": _paths,
        "binhost": _string,
        "binrepos": _uris,
        "features": _strings,
        "update_args": _strings,
        "build_args": _strings,
        "builders": _boolean,
        "distdir": _absolute,
        "pkgdir": _absolute,
        "make_conf": _environment,
        "environment": _environment,
    },
    "jobs": {"max_parallel": _count(1), "stop_timeout": _seconds, "history": _count(10)},
    "nspawn": {
        "settings_directory": _absolute,
        "bind_ro": _paths,
        "bind": _paths,
        "bridge": _string,
        "enable": _boolean,
    },
    "updates": {
        "policy": _choice(UpdatePolicy),
        "restart": _boolean,
        "sync": _boolean,
        "depclean": _choice(DepcleanPolicy),
        "config_files": _choice(ConfigFilesPolicy),
        "news": _choice(NewsPolicy),
        "health": _commands,
        "health_timeout": _timeout,
        "canary": _boolean,
    },
    "sandbox": {"bwrap": _nonempty, "setpriv": _nonempty, "hide": _paths},
    "binhost": {
        "publish": _boolean,
        "signing_key": _key_id,
        "signing_home": _absolute,
        "keys": _paths,
        "unreachable": _choice(UnreachablePolicy),
    },
}
MACHINE_SETTINGS: dict[str, Converter] = {
    "profile": _nonempty,
    "trusted": _boolean,
    "health": _commands,
}
SECTIONS: dict[str, type[Any]] = {
    "daemon": DaemonConfig,
    "storage": StorageConfig,
    "portage": PortageConfig,
    "jobs": JobsConfig,
    "nspawn": NspawnConfig,
    "updates": UpdatesConfig,
    "sandbox": SandboxConfig,
    "binhost": BinhostConfig,
}


def _line_of(text: str, table: str, key: str) -> int | None:
    """The line where `key` is set in `[table]`: tomllib does not say, users need it."""
    current = ""
    header = re.compile(r"^\s*\[\s*([^\]]+?)\s*\]")
    for number, line in enumerate(text.splitlines(), 1):
        if match := header.match(line):
            current = match.group(1).replace('"', "")
            if not key and current == table:
                return number
        elif key and current == table and re.match(rf"^\s*\"?{re.escape(key)}\"?\s*=", line):
            return number
    return None


def load(path: Path = DEFAULT_PATH, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate the configuration file; a missing file means all defaults."""
    environ = os.environ if environ is None else environ
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    except OSError as err:
        raise ConfigError(path, "", f"cannot read: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(path, "", f"not valid UTF-8: byte {err.start}") from err
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(path, "", f"not valid TOML: {err}") from err
    return parse(data, path=path, text=text, environ=environ)


def parse(
    data: Mapping[str, Any],
    *,
    path: Path = DEFAULT_PATH,
    text: str = "",
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Validate parsed TOML into a Config."""

    def fail(table: str, key: str, problem: str) -> ConfigError:
        dotted = f"{table}.{key}" if key else table
        return ConfigError(path, dotted, problem, _line_of(text, table, key))

    def convert(table: str, key: str, converter: Converter, value: Any) -> Any:
        try:
            return converter(value)
        except ValueError as err:
            raise fail(table, key, f"{err}, got {value!r}") from None

    sections: dict[str, Any] = {}
    for table, value in data.items():
        if table == "machines":
            continue
        if table not in SETTINGS:
            raise fail(table, "", f"unknown section (known: {', '.join([*SETTINGS, 'machines'])})")
        if not isinstance(value, dict):
            raise fail(table, "", "expected a [section]")
        known = SETTINGS[table]
        values = {}
        for key, raw in value.items():
            if key not in known:
                raise fail(table, key, f"unknown setting (known: {', '.join(known)})")
            values[key] = convert(table, key, known[key], raw)
        sections[table] = SECTIONS[table](**values)

    machines: dict[str, MachineConfig] = {}
    raw_machines = data.get("machines", {})
    if not isinstance(raw_machines, dict):
        raise fail("machines", "", "expected [machines.NAME] sections")
    for name, value in raw_machines.items():
        table = f"machines.{name}"
        if not isinstance(value, dict):
            raise fail(table, "", "expected a [machines.NAME] section")
        values = {}
        for key, raw in value.items():
            if key not in MACHINE_SETTINGS:
                raise fail(table, key, f"unknown setting (known: {', '.join(MACHINE_SETTINGS)})")
            values[key] = convert(table, key, MACHINE_SETTINGS[key], raw)
        machines[name] = MachineConfig(**values)

    pkgdir = sections.get("portage", PortageConfig()).pkgdir
    for bound in sections.get("nspawn", NspawnConfig()).bind:
        if pkgdir == bound or bound in pkgdir.parents:
            raise fail(
                "nspawn",
                "bind",
                f"{bound} holds PKGDIR ({pkgdir}): a container that can write it plants "
                "packages the other machines install; every machine gets it read-only",
            )
    portage = sections.get("portage", PortageConfig())
    binhost = sections.get("binhost", BinhostConfig())
    if binhost.publish and not binhost.signing_key:
        raise fail("binhost", "signing_key", "publish = true needs the key that signs")
    if portage.binrepos and not binhost.keys:
        raise fail(
            "binhost",
            "keys",
            "[portage] binrepos needs the public keys their packages are signed with",
        )
    if portage.binrepos and portage.binhost:
        raise fail(
            "portage",
            "binhost",
            "binhost (PORTAGE_BINHOST, unverified) and binrepos (verified) exclude each "
            "other: a builder that fetches requires every package to be signed",
        )
    if portage.binrepos and not portage.builders:
        raise fail(
            "portage",
            "binrepos",
            "needs builders = true: the builder roots fetch and verify the binhosts' "
            "packages, which the machines then install from PKGDIR",
        )
    daemon = sections.get("daemon", DaemonConfig())
    state = (environ or {}).get("STATE_DIRECTORY", "")
    if state:
        # systemd's StateDirectory= wins; it may list several, the first is ours.
        daemon = dataclasses.replace(daemon, state_directory=Path(state.split(":")[0]))
    return Config(path=path, **{**sections, "daemon": daemon}, machines=machines)
