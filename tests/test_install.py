"""`make install` and the Gentoo ebuilds install the same complete set of files.

The ebuilds run through Portage's real `ebuild` command (its doins, doman, insinto,
CONFIG_PROTECT-free image) in a repository written here, whose eclasses are the small
stand-ins in tests/gentoo/eclass. All install a copy of the working tree, so that
what is about to be committed is what is checked: the live ebuild directly, the
versioned one from the tarball `make dist` packs of that copy, committed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import gnspawn

TOP = Path(__file__).resolve().parent.parent
EBUILD_DIR = TOP / "contrib" / "gentoo" / "app-containers" / "gnspawn"
STAND_INS = Path(__file__).resolve().parent / "gentoo" / "eclass"
EBUILD = Path(sys.executable).parent / "ebuild"
PYTHON = os.environ.get("PYTHON", "python3")
SITE = "<site-packages>"
# Portage puts documentation in /usr/share/doc/${PF}; make install in .../doc/gnspawn.
GENTOO_DOCDIR = re.compile(r"usr/share/doc/gnspawn-[^/]+/")
DOCDIR = "usr/share/doc/gnspawn/"
# Files of the tree that must reach the system, and where (with PREFIX=/usr).
SHIPPED = {
    "systemd": "usr/lib/systemd/system/{name}",
    "dbus/*.conf": "usr/share/dbus-1/system.d/{name}",
    "dbus/*.service": "usr/share/dbus-1/system-services/{name}",
    "dbus/*.policy": "usr/share/polkit-1/actions/{name}",
    "dbus/interfaces/*.xml": "usr/share/dbus-1/interfaces/{name}",
    "man/*.1": "usr/share/man/man1/{name}",
    "man/*.5": "usr/share/man/man5/{name}",
    "man/*.8": "usr/share/man/man8/{name}",
    "contrib/completion/*.bash": "usr/share/bash-completion/completions/{stem}",
    "contrib/completion/_*": "usr/share/zsh/site-functions/{name}",
}


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="gnspawn-install-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def copy_tree(destination: Path) -> Path:
    """The files git tracks or would track, as they are in the working tree."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=TOP,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = TOP / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


@pytest.fixture(scope="module")
def source(work: Path) -> Path:
    return copy_tree(work / "src")


def make_install(source: Path, destdir: Path, *variables: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["make", "-s", "-C", str(source), "install", f"DESTDIR={destdir}", *variables],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def installed(root: Path) -> dict[str, Path]:
    """Installed file → where it is, with the Python package's directory as SITE.

    Python versions and schemes (site-packages, dist-packages) differ between
    systems; byte code and the dist-info's contents are the installer's own.
    """
    package = next(root.rglob("gnspawn/__init__.py")).parent.parent
    files: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.is_dir() or "__pycache__" in path.parts:
            continue
        if path.is_relative_to(package):
            relative = path.relative_to(package)
            if relative.parts[0].endswith(".dist-info"):
                files[f"{SITE}/{relative.parts[0]}/"] = path.parent
                continue
            name = f"{SITE}/{relative}"
        else:
            name = str(path.relative_to(root))
        files[GENTOO_DOCDIR.sub(DOCDIR, name)] = path
    return files


@pytest.fixture(scope="module")
def by_make(work: Path, source: Path) -> dict[str, Path]:
    make_install(source, work / "make", "PREFIX=/usr")
    return installed(work / "make")


def write_repository(work: Path, source: Path) -> tuple[Path, dict[str, str]]:
    """A repository holding the ebuilds and the stand-in eclasses, a Portage
    configuration for it, and the environment that makes `ebuild` use them; the
    ebuilds' directory in it."""
    repo = work / "repo"
    name = "gnspawn-install-test"
    for sub in ("metadata", "profiles/default", "eclass", "app-containers"):
        (repo / sub).mkdir(parents=True)
    (repo / "metadata" / "layout.conf").write_text("masters =\nthin-manifests = true\n")
    (repo / "profiles" / "repo_name").write_text(f"{name}\n")
    (repo / "profiles" / "categories").write_text("app-containers\n")
    (repo / "profiles" / "default" / "eapi").write_text("8\n")
    (repo / "profiles" / "default" / "make.defaults").write_text(
        'ARCH="amd64"\nACCEPT_KEYWORDS="amd64"\nCHOST="x86_64-pc-linux-gnu"\n'
        'ELIBC="glibc"\nKERNEL="linux"\n'
    )
    for eclass in STAND_INS.glob("*.eclass"):
        shutil.copy2(eclass, repo / "eclass")
    shutil.copytree(source / EBUILD_DIR.relative_to(TOP), repo / "app-containers" / "gnspawn")

    config = work / "config"
    portage = config / "etc" / "portage"
    portage.mkdir(parents=True)
    (portage / "make.profile").symlink_to(repo / "profiles" / "default")
    tmpdir = work / "portage-tmp"
    tmpdir.mkdir()
    # No sandboxes or privilege drops (nothing here provides them); no compression,
    # so that the pages compare with make install's.
    (portage / "make.conf").write_text(
        'FEATURES="-sandbox -usersandbox -userpriv -userfetch -usersync -ipc-sandbox '
        '-network-sandbox -pid-sandbox -news nostrip"\n'
        "PORTAGE_USERNAME=root\nPORTAGE_GRPNAME=root\n"
        f'PORTAGE_TMPDIR="{tmpdir}"\nDISTDIR="{work / "distfiles"}"\n'
        'PORTAGE_COMPRESS=""\n'
    )
    repos = f"[DEFAULT]\nmain-repo = {name}\n\n[{name}]\nlocation = {repo}\n"
    (portage / "repos.conf").write_text(repos)
    # Portage unpacks tarballs with `gtar`, as Gentoo names GNU tar; Debian does not.
    tools = work / "bin"
    tools.mkdir()
    (tools / "gtar").symlink_to(shutil.which("tar") or "/bin/tar")
    env = {
        **os.environ,
        "EPREFIX": "",
        "PORTAGE_CONFIGROOT": str(config),
        "PORTAGE_REPOSITORIES": repos,
        "ROOT": str(work / "root"),
        "NOCOLOR": "true",
        "PATH": f"{tools}:{os.environ['PATH']}",
        "GNSPAWN_TEST_PYTHON": shutil.which(PYTHON) or PYTHON,
        # git-r3 takes the source from here instead of the ebuild's EGIT_REPO_URI.
        "EGIT_OVERRIDE_REPO_USR_SRC_GNSPAWN": f"file://{source}",
    }
    (work / "root").mkdir()
    (work / "distfiles").mkdir()
    return repo / "app-containers" / "gnspawn", env


@pytest.fixture(scope="module")
def repository(work: Path, source: Path) -> tuple[Path, dict[str, str]]:
    if os.geteuid() != 0:
        pytest.fail("running the ebuild through Portage needs root")
    assert EBUILD.is_file(), f"{EBUILD} is missing: Portage is a test dependency"
    return write_repository(work, source)


def run_ebuild(
    work: Path, repository: tuple[Path, dict[str, str]], version: str, *commands: str
) -> dict[str, Path]:
    """The files `ebuild gnspawn-VERSION.ebuild COMMANDS... clean install` installs."""
    directory, env = repository
    ebuild = directory / f"gnspawn-{version}.ebuild"
    result = subprocess.run(
        [str(EBUILD), str(ebuild), *commands, "clean", "install"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    image = work / "portage-tmp" / "portage" / "app-containers" / f"gnspawn-{version}" / "image"
    return installed(image)


@pytest.fixture(scope="module")
def by_ebuild(work: Path, repository: tuple[Path, dict[str, str]]) -> dict[str, Path]:
    return run_ebuild(work, repository, "9999")


@pytest.fixture(scope="module")
def release(work: Path) -> tuple[Path, list[str]]:
    """`make dist` in a repository whose one commit is the working tree: the tarball,
    and the files git tracks there."""
    checkout = copy_tree(work / "checkout")
    git = ["git", "-C", str(checkout), "-c", "user.name=test", "-c", "user.email=test@localhost"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "release"]):
        subprocess.run([*git, *command], check=True, capture_output=True)
    result = subprocess.run(
        ["make", "-s", "-C", str(checkout), "dist"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tracked = subprocess.run(
        [*git, "ls-files", "-z"], capture_output=True, text=True, check=True
    ).stdout
    return checkout / f"gnspawn-{gnspawn.__version__}.tar.gz", sorted(
        filter(None, tracked.split("\0"))
    )


def test_make_install_and_the_ebuild_install_the_same_files(
    by_make: dict[str, Path], by_ebuild: dict[str, Path]
) -> None:
    only_make = sorted(set(by_make) - set(by_ebuild))
    only_ebuild = sorted(set(by_ebuild) - set(by_make))
    assert not only_make and not only_ebuild, (
        f"only make install installs {only_make}; only the ebuild installs {only_ebuild}"
    )


def test_make_install_and_the_ebuild_install_the_same_contents(
    by_make: dict[str, Path], by_ebuild: dict[str, Path]
) -> None:
    differ = []
    for name, path in by_make.items():
        other = by_ebuild.get(name)
        if other is None or path.is_dir() or name.startswith("usr/bin/"):
            continue  # scripts: each names its interpreter
        if path.read_bytes() != other.read_bytes():
            differ.append(name)
        elif path.stat().st_mode & 0o777 != other.stat().st_mode & 0o777:
            differ.append(f"{name} (mode)")
    assert not differ


def test_everything_the_tree_ships_is_installed(source: Path, by_make: dict[str, Path]) -> None:
    expected = {"usr/bin/gnctl", "usr/bin/gnspawnd", "etc/gnspawn/gnspawn.toml"}
    expected |= {f"{DOCDIR}README.md", f"{DOCDIR}gnspawn.toml", f"{SITE}/gnspawn/__init__.py"}
    for pattern, where in SHIPPED.items():
        files = [p for p in source.glob(pattern if "*" in pattern else f"{pattern}/*")]
        assert files, f"nothing in the tree matches {pattern}"
        expected |= {where.format(name=p.name, stem=p.stem) for p in files}
    modules = {f"{SITE}/{p.relative_to(source / 'src')}" for p in (source / "src").rglob("*.py")}
    expected |= modules
    missing = sorted(expected - set(by_make))
    assert not missing, f"make install leaves out {missing}"
    extra = sorted(n for n in set(by_make) - expected if not n.endswith(".dist-info/"))
    assert not extra, f"make install installs files nothing expects: {extra}"


def test_scripts_run_the_installed_package(by_make: dict[str, Path]) -> None:
    """Each script starts PYTHON and imports the package where it was installed (run
    here with this interpreter, which has the dependencies)."""
    site = by_make[f"{SITE}/gnspawn/__init__.py"].parent.parent
    interpreter = subprocess.run(
        [PYTHON, "-c", "import sys; print(sys.executable)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    for script in ("gnctl", "gnspawnd"):
        path = by_make[f"usr/bin/{script}"]
        assert os.access(path, os.X_OK)
        assert path.read_text().splitlines()[0] == f"#!{interpreter}"
        result = subprocess.run(
            [sys.executable, str(path), "--version"],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(site)},
        )
        assert result.returncode == 0 and result.stdout.startswith(script), result.stderr
        assert (
            f"{site}/gnspawn"
            in subprocess.run(
                [sys.executable, "-c", "import gnspawn; print(gnspawn.__file__)"],
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": str(site)},
            ).stdout
        )


def test_prefix_moves_the_programs_and_the_units_follow(work: Path, source: Path) -> None:
    destdir = work / "local"
    make_install(source, destdir, "PREFIX=/usr/local")
    files = installed(destdir)
    assert "usr/local/bin/gnspawnd" in files
    assert "etc/gnspawn/gnspawn.toml" in files, "SYSCONFDIR stays /etc"
    unit = (destdir / "usr/local/lib/systemd/system/gnspawnd.service").read_text()
    activation = (
        destdir / "usr/local/share/dbus-1/system-services/org.gnspawn1.service"
    ).read_text()
    timer_service = (destdir / "usr/local/lib/systemd/system/gnspawn-update.service").read_text()
    assert "ExecStart=/usr/local/bin/gnspawnd\n" in unit
    assert "Exec=/usr/local/bin/gnspawnd\n" in activation
    assert "ExecStart=/usr/local/bin/gnctl " in timer_service
    assert "/usr/bin/" not in unit + activation + timer_service


def test_an_admins_configuration_is_kept_and_uninstall_removes_the_rest(
    work: Path, source: Path
) -> None:
    destdir = work / "again"
    make_install(source, destdir)
    config = destdir / "etc" / "gnspawn" / "gnspawn.toml"
    config.write_text('[storage]\ndataset = "tank/machines"\n')
    make_install(source, destdir)
    assert config.read_text() == '[storage]\ndataset = "tank/machines"\n'

    result = subprocess.run(
        ["make", "-s", "-C", str(source), "uninstall", f"DESTDIR={destdir}"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    left = [p for p in destdir.rglob("*") if p.is_file()]
    assert left == [config]


def test_make_dist_packs_every_tracked_file_under_one_versioned_directory(
    release: tuple[Path, list[str]],
) -> None:
    tarball, tracked = release
    top = f"gnspawn-{gnspawn.__version__}"
    with tarfile.open(tarball) as archive:
        members = archive.getmembers()
    assert {m.name.split("/")[0] for m in members} == {top}
    packed = sorted(m.name.removeprefix(f"{top}/") for m in members if not m.isdir())
    assert packed == tracked


def test_the_versioned_ebuild_installs_the_release_tarball(
    work: Path,
    repository: tuple[Path, dict[str, str]],
    release: tuple[Path, list[str]],
    by_make: dict[str, Path],
) -> None:
    """As the README says: the tarball copied into DISTDIR, a Manifest made, then the
    package built from it installs what make install does."""
    tarball, _ = release
    shutil.copy2(tarball, work / "distfiles")
    by_release = run_ebuild(work, repository, gnspawn.__version__, "manifest")
    assert sorted(by_release) == sorted(by_make)


def ebuild_variable(text: str, name: str) -> str:
    match = re.search(rf'^{name}="([^"]*)"', text, re.MULTILINE)
    assert match, f"the ebuild sets no {name}"
    return match.group(1)


def test_the_ebuilds_agree_with_pyproject() -> None:
    """One versioned ebuild, of the package's version, the same file as the live one;
    their Python dependencies and versions are pyproject.toml's."""
    project = tomllib.loads((TOP / "pyproject.toml").read_text(encoding="utf-8"))
    attr = project["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "gnspawn.__version__"
    ebuilds = sorted(p.name for p in EBUILD_DIR.glob("*.ebuild"))
    assert ebuilds == sorted(["gnspawn-9999.ebuild", f"gnspawn-{gnspawn.__version__}.ebuild"])
    live = (EBUILD_DIR / "gnspawn-9999.ebuild").read_text(encoding="utf-8")
    versioned = (EBUILD_DIR / f"gnspawn-{gnspawn.__version__}.ebuild").read_text(encoding="utf-8")
    assert versioned == live, "the versioned ebuild is a copy of the live one"

    expected = set()
    for line in project["project"]["dependencies"]:
        requirement = Requirement(line)
        assert requirement.marker is None, f"{line}: the ebuild has no way to say the marker"
        for specifier in requirement.specifier:
            assert specifier.operator in (">=", ">", "<=", "<"), line
            expected.add(f"{specifier.operator}dev-python/{requirement.name}-{specifier.version}")
    declared = {
        atom.split("[")[0]
        for atom in ebuild_variable(live, "RDEPEND").split()
        if "dev-python/" in atom
    }
    assert declared == expected

    lowest = re.fullmatch(r">=3\.(\d+)", project["project"]["requires-python"])
    compat = re.search(r"^PYTHON_COMPAT=\( python3_\{(\d+)\.\.\d+\} \)", live, re.MULTILINE)
    assert lowest and compat and lowest.group(1) == compat.group(1)


def test_the_readme_installs_the_release_of_this_version() -> None:
    readme = (TOP / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"gnspawn-(\d[\w.]*?)\.(?:ebuild|tar\.gz)", readme)) - {"9999"}
    assert named == {gnspawn.__version__}


def test_the_package_builds_without_deprecation_warnings(work: Path, source: Path) -> None:
    """setuptools warns of pyproject.toml fields it will stop reading (the pip of the
    venv shows the build backend's warnings, as `make deps` does)."""
    wheel = ["wheel", "--quiet", "--no-deps", "--wheel-dir", str(work / "wheel")]
    result = subprocess.run(
        [sys.executable, "-m", "pip", *wheel, str(source)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "deprecat" not in (result.stdout + result.stderr).lower(), result.stderr
