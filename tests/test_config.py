"""The configuration file: defaults, a full file, and errors that name file, line and key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gnspawn.config import (
    BinhostConfig,
    Config,
    ConfigError,
    DaemonConfig,
    DepcleanPolicy,
    JobsConfig,
    MachineConfig,
    NspawnConfig,
    PortageConfig,
    SandboxConfig,
    StorageConfig,
    UnreachablePolicy,
    load,
    parse,
)

FULL = """\
[daemon]
state_directory = "/srv/gnspawn/state"  # job database

[storage]
dataset = "tank/containers"
machines_directory = "/srv/machines"
keep_snapshots = 3

[portage]
emerge = "/usr/bin/emerge"
default_profile = "default/linux/amd64/23.0/systemd"
repos = ["/var/db/repos/gentoo", "/var/db/repos/local"]
binhost = "https://binhost.example/amd64"
features = ["buildpkg", "getbinpkg"]
update_args = ["-1uvDN", "@world"]
builders = false
environment = { MAKEOPTS = "-j8", EMERGE_DEFAULT_OPTS = "--jobs=2" }

[jobs]
max_parallel = 4
stop_timeout = 2.5
history = 50

[nspawn]
settings_directory = "/run/systemd/nspawn"
bind_ro = ["/var/db/repos"]
bind = ["/var/cache/distfiles"]
bridge = "br0"
enable = true

[sandbox]
bwrap = "/usr/local/bin/bwrap"
hide = ["/srv/secrets"]

[machines.web]
profile = "/var/db/repos/local/profiles/host/web"
trusted = true

[machines."db"]
profile = "default/linux/amd64/23.0"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gnspawn.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(path, environ={})
    return caught.value


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    config = load(path, environ={})
    assert config == Config(path=path)
    assert config.daemon.state_directory == Path("/var/lib/gnspawn")
    assert config.storage == StorageConfig(
        dataset="zpool/machines", machines_directory=Path("/var/lib/machines"), keep_snapshots=5
    )
    assert config.portage.emerge == "emerge"
    assert config.portage.default_profile == "default/linux/amd64/23.0/systemd"
    assert config.portage.repos == (Path("/var/db/repos/gentoo"),)
    assert config.portage.binhost == ""
    assert config.portage.features == ("buildpkg", "binpkg-multi-instance", "getbinpkg")
    assert config.portage.update_args == (
        "--update",
        "--deep",
        "--newuse",
        "--with-bdeps=y",
        "@world",
    )
    assert config.updates.depclean is DepcleanPolicy.OFF
    assert dict(config.portage.environment) == {}
    assert config.jobs.max_parallel == 2
    assert config.nspawn == NspawnConfig(
        settings_directory=Path("/etc/systemd/nspawn"),
        bind_ro=(Path("/var/db/repos"),),
        bind=(Path("/var/cache/distfiles"),),
        bridge="",
        enable=False,
    )
    assert dict(config.machines) == {}


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "# nothing set\n")
    assert load(path, environ={}) == Config(path=path)


def test_full_file(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    config = load(path, environ={})
    assert config.path == path
    assert config.daemon == DaemonConfig(state_directory=Path("/srv/gnspawn/state"))
    assert config.storage == StorageConfig(
        dataset="tank/containers", machines_directory=Path("/srv/machines"), keep_snapshots=3
    )
    assert config.portage == PortageConfig(
        emerge="/usr/bin/emerge",
        default_profile="default/linux/amd64/23.0/systemd",
        repos=(Path("/var/db/repos/gentoo"), Path("/var/db/repos/local")),
        binhost="https://binhost.example/amd64",
        features=("buildpkg", "getbinpkg"),
        update_args=("-1uvDN", "@world"),
        builders=False,
        environment={"MAKEOPTS": "-j8", "EMERGE_DEFAULT_OPTS": "--jobs=2"},
    )
    assert config.jobs == JobsConfig(max_parallel=4, stop_timeout=2.5, history=50)
    assert config.nspawn == NspawnConfig(
        settings_directory=Path("/run/systemd/nspawn"),
        bind_ro=(Path("/var/db/repos"),),
        bind=(Path("/var/cache/distfiles"),),
        bridge="br0",
        enable=True,
    )
    assert config.sandbox == SandboxConfig(
        bwrap="/usr/local/bin/bwrap", hide=(Path("/srv/secrets"),)
    )
    assert dict(config.machines) == {
        "web": MachineConfig(profile="/var/db/repos/local/profiles/host/web", trusted=True),
        "db": MachineConfig(profile="default/linux/amd64/23.0"),
    }
    assert config.machine("web").trusted and not config.machine("db").trusted
    assert config.machine("other") == MachineConfig()


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load(write(tmp_path, FULL), environ={})
    with pytest.raises(AttributeError):
        config.storage.keep_snapshots = 9  # type: ignore[misc]


def test_integer_stop_timeout_becomes_seconds() -> None:
    config = parse({"jobs": {"stop_timeout": 3}})
    assert config.jobs.stop_timeout == 3.0
    assert isinstance(config.jobs.stop_timeout, float)


def test_parse_without_text_or_environ() -> None:
    config = parse({"storage": {"keep_snapshots": 2}})
    assert config.storage.keep_snapshots == 2
    assert config.path == Path("/etc/gnspawn/gnspawn.toml")


def test_state_directory_from_environment_wins(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    config = load(path, environ={"STATE_DIRECTORY": "/var/lib/gnspawn-unit"})
    assert config.daemon.state_directory == Path("/var/lib/gnspawn-unit")


def test_state_directory_first_of_several(tmp_path: Path) -> None:
    config = load(tmp_path / "absent.toml", environ={"STATE_DIRECTORY": "/a/one:/b/two"})
    assert config.daemon.state_directory == Path("/a/one")


def test_empty_state_directory_in_environment_is_ignored(tmp_path: Path) -> None:
    config = load(write(tmp_path, FULL), environ={"STATE_DIRECTORY": ""})
    assert config.daemon.state_directory == Path("/srv/gnspawn/state")


def test_parse_reads_state_directory_from_given_environ() -> None:
    config = parse({}, environ={"STATE_DIRECTORY": "/run/state"})
    assert config.daemon.state_directory == Path("/run/state")


def test_error_message_names_file_line_and_key(tmp_path: Path) -> None:
    text = """\
[daemon]
state_directory = "/var/lib/gnspawn"

[storage]
dataset = "zpool/machines"
machines_directory = "/var/lib/machines"
keep_snapshots = "five"
"""
    err = error_of(tmp_path, text)
    path = tmp_path / "gnspawn.toml"
    assert str(err) == (
        f"{path}:7: storage.keep_snapshots: expected a whole number of at least 1, got 'five'"
    )
    assert (err.path, err.line, err.key) == (path, 7, "storage.keep_snapshots")


@pytest.mark.parametrize(
    ("text", "line", "key", "problem"),
    [
        (
            "[storage]\nkeep_snapshots = 0\n",
            2,
            "storage.keep_snapshots",
            "expected a whole number of at least 1, got 0",
        ),
        (
            "[machines.web]\ntrusted = 1\n",
            2,
            "machines.web.trusted",
            "expected true or false, got 1",
        ),
        (
            '[portage]\nbuilders = "no"\n',
            2,
            "portage.builders",
            "expected true or false, got 'no'",
        ),
        (
            "[storage]\nkeep_snapshots = true\n",
            2,
            "storage.keep_snapshots",
            "expected a whole number of at least 1, got True",
        ),
        (
            "[jobs]\nmax_parallel = 1.5\n",
            2,
            "jobs.max_parallel",
            "expected a whole number of at least 1, got 1.5",
        ),
        (
            "[jobs]\nmax_parallel = 2\nhistory = 9\n",
            3,
            "jobs.history",
            "expected a whole number of at least 10, got 9",
        ),
        (
            "[jobs]\nstop_timeout = -1\n",
            2,
            "jobs.stop_timeout",
            "expected a number of seconds, 0 or more and under a day, got -1",
        ),
        (
            '[jobs]\nstop_timeout = "10s"\n',
            2,
            "jobs.stop_timeout",
            "expected a number of seconds, 0 or more and under a day, got '10s'",
        ),
        (
            '[nspawn]\nbridge = "br0"\nenable = "yes"\n',
            3,
            "nspawn.enable",
            "expected true or false, got 'yes'",
        ),
        ("[nspawn]\nbridge = 0\n", 2, "nspawn.bridge", "expected a string, got 0"),
        (
            '[portage]\nfeatures = "buildpkg"\n',
            2,
            "portage.features",
            "expected a list of strings, got 'buildpkg'",
        ),
        (
            '[portage]\nupdate_args = ["-1uv", 1]\n',
            2,
            "portage.update_args",
            "expected a list of strings, got ['-1uv', 1]",
        ),
        ('[portage]\nemerge = ""\n', 2, "portage.emerge", "expected a non-empty string, got ''"),
        (
            '[portage]\nenvironment = ["MAKEOPTS=-j4"]\n',
            2,
            "portage.environment",
            "expected a table of strings, got ['MAKEOPTS=-j4']",
        ),
        (
            "[portage]\nenvironment = { MAKEOPTS = 4 }\n",
            2,
            "portage.environment",
            "expected a table of strings, got {'MAKEOPTS': 4}",
        ),
        (
            '[machines.web]\nprofile = ""\n',
            2,
            "machines.web.profile",
            "expected a non-empty string, got ''",
        ),
    ],
)
def test_wrong_types(tmp_path: Path, text: str, line: int, key: str, problem: str) -> None:
    err = error_of(tmp_path, text)
    assert str(err) == f"{tmp_path / 'gnspawn.toml'}:{line}: {key}: {problem}"
    assert (err.line, err.key, err.problem) == (line, key, problem)


def test_unknown_section(tmp_path: Path) -> None:
    err = error_of(tmp_path, '[storage]\ndataset = "zpool/m"\n\n[deamon]\nfoo = 1\n')
    assert err.line == 4
    assert err.key == "deamon"
    assert str(err).startswith(f"{tmp_path / 'gnspawn.toml'}:4: deamon: unknown section")
    assert "daemon" in err.problem
    assert "machines" in err.problem


def test_unknown_key(tmp_path: Path) -> None:
    err = error_of(tmp_path, "[storage]\nkeep_snapshots = 3\nkeep_snapshot = 4\n")
    assert err.line == 3
    assert err.key == "storage.keep_snapshot"
    assert str(err).startswith(
        f"{tmp_path / 'gnspawn.toml'}:3: storage.keep_snapshot: unknown setting (known: "
    )
    assert "keep_snapshots" in err.problem


def test_unknown_machine_key(tmp_path: Path) -> None:
    err = error_of(tmp_path, '[machines.web]\nprofile = "x"\nbridge = "br1"\n')
    assert (err.line, err.key) == (3, "machines.web.bridge")
    assert "unknown setting" in err.problem


def test_quoted_keys_and_section_names_are_found(tmp_path: Path) -> None:
    err = error_of(tmp_path, '[ "storage" ]\n"keep_snapshots" = -2\n')
    assert (err.line, err.key) == (2, "storage.keep_snapshots")


def test_key_is_found_in_its_own_section(tmp_path: Path) -> None:
    text = '[nspawn]\nbind = ["/a"]\n\n[storage]\nmachines_directory = "/m"\n\n[jobs]\nbind = 1\n'
    err = error_of(tmp_path, text)
    assert (err.line, err.key) == (8, "jobs.bind")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[daemon]\nstate_directory = "var/lib/gnspawn"\n', "daemon.state_directory"),
        ('[storage]\nmachines_directory = "machines"\n', "storage.machines_directory"),
        ('[nspawn]\nsettings_directory = "./nspawn"\n', "nspawn.settings_directory"),
        ('[portage]\nrepos = ["/var/db/repos/gentoo", "local"]\n', "portage.repos"),
        ('[nspawn]\nbind_ro = ["var/db/repos"]\n', "nspawn.bind_ro"),
        ('[nspawn]\nbind = ["/ok", "relative/cache"]\n', "nspawn.bind"),
    ],
)
def test_relative_path(tmp_path: Path, text: str, key: str) -> None:
    err = error_of(tmp_path, text)
    assert (err.line, err.key) == (2, key)
    assert err.problem.startswith("expected an absolute path, got ")
    assert f":2: {key}: expected an absolute path" in str(err)


@pytest.mark.parametrize(
    "name", ["/zpool/machines", "zpool/machines/", "zpool//machines", "zpool@snap", "zpool m", "-x"]
)
def test_bad_dataset_name(tmp_path: Path, name: str) -> None:
    err = error_of(tmp_path, f'[storage]\ndataset = "{name}"\n')
    assert (err.line, err.key) == (2, "storage.dataset")
    assert f"{name!r} is not a ZFS dataset name" in err.problem


@pytest.mark.parametrize("name", ["zpool", "zpool/machines", "tank/a_b/c-d.e:f"])
def test_good_dataset_names(name: str) -> None:
    assert parse({"storage": {"dataset": name}}).storage.dataset == name


def test_empty_dataset_name(tmp_path: Path) -> None:
    err = error_of(tmp_path, '[storage]\ndataset = ""\n')
    assert err.key == "storage.dataset"
    assert err.problem == "expected a non-empty string, got ''"


@pytest.mark.parametrize("name", ["1MAKEOPTS", "MAKE-OPTS", "MAKE OPTS", ""])
def test_bad_environment_variable_name(tmp_path: Path, name: str) -> None:
    text = f'[portage]\nemerge = "emerge"\nenvironment = {{ "{name}" = "x" }}\n'
    err = error_of(tmp_path, text)
    assert (err.line, err.key) == (3, "portage.environment")
    assert f"{name!r} is not an environment variable name" in err.problem


def test_invalid_toml(tmp_path: Path) -> None:
    err = error_of(tmp_path, "[storage]\nkeep_snapshots = 5\ndataset = zpool\n")
    message = str(err)
    assert message.startswith(f"{tmp_path / 'gnspawn.toml'}: not valid TOML: ")
    assert "line 3" in message


def test_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "gnspawn.toml"
    path.write_bytes(b'[storage]\ndataset = "zpool\xff"\n')
    with pytest.raises(ConfigError) as caught:
        load(path, environ={})
    assert str(caught.value).startswith(f"{path}: not valid UTF-8")


def test_unreadable_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={})
    assert str(caught.value).startswith(f"{tmp_path}: cannot read: ")


def test_section_that_is_not_a_table(tmp_path: Path) -> None:
    err = error_of(tmp_path, "storage = 5\n")
    assert err.key == "storage"
    assert err.problem == "expected a [section]"


def test_machines_that_is_not_a_table(tmp_path: Path) -> None:
    err = error_of(tmp_path, 'machines = "web"\n')
    assert err.key == "machines"
    assert err.problem == "expected [machines.NAME] sections"


def test_machine_that_is_not_a_table(tmp_path: Path) -> None:
    err = error_of(tmp_path, '[machines]\nweb = "x"\n')
    assert err.key == "machines.web"
    assert err.problem == "expected a [machines.NAME] section"


def gnspawnd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gnspawn.daemon", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_config_rejects_a_bad_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[storage]\ndataset = "zpool/machines"\nkeep_snapshots = "five"\n')
    result = gnspawnd("--check-config", "--config", str(path))
    assert result.returncode == 78
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == (
        f"gnspawnd: {path}:3: storage.keep_snapshots: "
        "expected a whole number of at least 1, got 'five'"
    )


def test_check_config_rejects_a_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "gnspawn.toml"
    path.write_bytes(b"\xff\xfe[storage]\n")
    result = gnspawnd("--check-config", "--config", str(path))
    assert result.returncode == 78
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert str(path) in result.stderr


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    result = gnspawnd("--check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.strip() == f"{path}: configuration is valid"


@pytest.mark.parametrize("value", ["nan", "inf", "86400"])
def test_stop_timeout_must_be_a_real_duration(tmp_path: Path, value: str) -> None:
    path = tmp_path / "gnspawn.toml"
    path.write_text(f"[jobs]\nstop_timeout = {value}\n")
    with pytest.raises(ConfigError, match=r"gnspawn.toml:2: jobs.stop_timeout"):
        load(path)


@pytest.mark.parametrize("dataset", ["zpool/..", "zpool/./x", "1pool/machines"])
def test_dataset_names_zfs_would_refuse(tmp_path: Path, dataset: str) -> None:
    path = tmp_path / "gnspawn.toml"
    path.write_text(f'[storage]\ndataset = "{dataset}"\n')
    with pytest.raises(ConfigError, match=r"storage.dataset: .* is not a ZFS dataset name"):
        load(path)


@pytest.mark.parametrize("bind", ["/var/cache/binpkgs", "/var/cache", "/"])
def test_a_writable_bind_of_pkgdir_is_refused(tmp_path: Path, bind: str) -> None:
    err = error_of(tmp_path, f'[nspawn]\nbind = ["/var/cache/distfiles", "{bind}"]\n')
    assert err.key == "nspawn.bind"
    assert "holds PKGDIR (/var/cache/binpkgs)" in str(err)
    assert err.line == 2


def test_pkgdir_elsewhere_may_sit_beside_a_bind(tmp_path: Path) -> None:
    path = write(tmp_path, '[portage]\npkgdir = "/srv/binpkgs"\n[nspawn]\nbind = ["/var/cache"]\n')
    assert load(path, environ={}).nspawn.bind == (Path("/var/cache"),)


def test_depclean_takes_its_three_policies_and_names_them_when_wrong() -> None:
    for value in ("off", "report", "apply"):
        config = parse({"updates": {"depclean": value}})
        assert config.updates.depclean is DepcleanPolicy(value)
    with pytest.raises(ConfigError) as err:
        parse({"updates": {"depclean": "yes"}}, text='[updates]\ndepclean = "yes"\n')
    assert str(err.value) == (
        "/etc/gnspawn/gnspawn.toml:2: updates.depclean: "
        "expected one of off, report, apply, got 'yes'"
    )


def test_config_files_takes_its_three_policies() -> None:
    for value in ("keep", "replace", "merge"):
        assert parse({"updates": {"config_files": value}}).updates.config_files.value == value
    with pytest.raises(ConfigError) as err:
        parse({"updates": {"config_files": "overwrite"}})
    assert "expected one of keep, replace, merge, got 'overwrite'" in str(err.value)


def test_news_takes_report_or_hold_and_reports_by_default() -> None:
    assert parse({}).updates.news.value == "report"
    for value in ("report", "hold"):
        assert parse({"updates": {"news": value}}).updates.news.value == value
    with pytest.raises(ConfigError) as err:
        parse({"updates": {"news": "ignore"}}, text='[updates]\nnews = "ignore"\n')
    assert str(err.value) == (
        "/etc/gnspawn/gnspawn.toml:2: updates.news: expected one of report, hold, got 'ignore'"
    )


def test_health_checks_are_commands_and_a_machine_may_have_its_own() -> None:
    config = parse(
        {
            "updates": {"health": [["pg_isready"], ["curl", "-f", "http://localhost/"]]},
            "machines": {"quiet": {"health": []}, "db": {"health": [["true"]]}},
        }
    )
    assert config.health("web") == (("pg_isready",), ("curl", "-f", "http://localhost/"))
    assert config.health("quiet") == ()
    assert config.health("db") == (("true",),)
    assert config.updates.health_timeout == 120.0 and config.updates.canary is True
    bad: object
    for bad in (["pg_isready"], [[]], [[""]], [["ok", 1]], "pg_isready"):
        with pytest.raises(ConfigError) as err:
            parse({"updates": {"health": bad}})
        assert 'expected a list of commands, each a list of strings: [["cmd", "arg"]]' in str(
            err.value
        )


def test_a_health_timeout_is_more_than_nothing() -> None:
    assert parse({"updates": {"health_timeout": 0.5}}).updates.health_timeout == 0.5
    for bad in (0, -1, 86400, True):
        with pytest.raises(ConfigError) as err:
            parse({"updates": {"health_timeout": bad}})
        assert "expected a number of seconds" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse({"updates": {"health_timeout": 0}})
    assert "more than 0 and under a day, got 0" in str(err.value)


def test_binhost_settings() -> None:
    config = parse(
        {
            "portage": {"binrepos": ["https://builder.example/amd64", "file:///srv/binpkgs"]},
            "binhost": {
                "publish": True,
                "signing_key": "0A07635763335F587ADC42A11850B77AF96DE4C1",
                "signing_home": "/etc/gnspawn/gnupg",
                "keys": ["/etc/gnspawn/builder.asc"],
                "unreachable": "hold",
            },
        }
    )
    assert config.portage.binrepos == ("https://builder.example/amd64", "file:///srv/binpkgs")
    assert config.binhost == BinhostConfig(
        publish=True,
        signing_key="0A07635763335F587ADC42A11850B77AF96DE4C1",
        signing_home=Path("/etc/gnspawn/gnupg"),
        keys=(Path("/etc/gnspawn/builder.asc"),),
        unreachable=UnreachablePolicy.HOLD,
    )
    defaults = parse({}).binhost
    assert (defaults.publish, defaults.keys, defaults.unreachable) == (False, (), "compile")
    assert defaults.signing_home == Path("/root/.gnupg")


@pytest.mark.parametrize(
    ("data", "key", "problem"),
    [
        ({"portage": {"binrepos": ["builder.example"]}}, "portage.binrepos", "not a binhost URI"),
        ({"portage": {"binrepos": ["ssh://b/x"]}}, "portage.binrepos", "not a binhost URI"),
        ({"portage": {"binrepos": ["http://a b"]}}, "portage.binrepos", "not a binhost URI"),
        ({"portage": {"binrepos": "http://b"}}, "portage.binrepos", "expected a list"),
        ({"binhost": {"signing_key": "--list"}}, "binhost.signing_key", "not a key"),
        ({"binhost": {"signing_key": "a b"}}, "binhost.signing_key", "not a key"),
        ({"binhost": {"keys": ["builder.asc"]}}, "binhost.keys", "absolute path"),
        ({"binhost": {"unreachable": "wait"}}, "binhost.unreachable", "one of compile, hold"),
        ({"binhost": {"publish": True}}, "binhost.signing_key", "needs the key that signs"),
        (
            {"portage": {"binrepos": ["http://b"]}},
            "binhost.keys",
            "binrepos needs the public keys",
        ),
        (
            {"portage": {"binrepos": ["http://b"], "builders": False}, "binhost": {"keys": ["/k"]}},
            "portage.binrepos",
            "needs builders = true",
        ),
        (
            {
                "portage": {"binrepos": ["http://b"], "binhost": "http://o"},
                "binhost": {"keys": ["/k"]},
            },
            "portage.binhost",
            "exclude each other",
        ),
    ],
)
def test_bad_binhost_settings(data: dict[str, Any], key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(data)
    assert err.value.key == key and problem in err.value.problem, str(err.value)
