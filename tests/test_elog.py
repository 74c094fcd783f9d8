"""What packages tell the admin when they merge: elog messages become the job's notices."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import busctl, gnctl, job_string
from testbed import Testbed

NOISY = """EAPI=8
DESCRIPTION="A package with something to say when it merges"
SLOT="0"
KEYWORDS="amd64"
S=${WORKDIR}
src_install() {
	insinto /usr/share/noisy
	echo "${PV}" > "${T}/version" || die
	doins "${T}/version"
}
pkg_postinst() {
	[[ ${PV} == 1 ]] && return
	ewarn "the config format changed in ${PV}"
	ewarn "run noisy-migrate once"
	eerror "the old cache is gone"
	elog "see the ${PV} release notes"
	einfo "merged fine"
}
"""
PLANT = """
gnspawn_plant() {{
    local dir=${{PORTAGE_TMPDIR}}/gnspawn-elog
    ln -sf {secret} "${{dir}}/app-misc:evil-1:20260101-000000.log"
    ln -sf {secret_dir} "${{dir}}/app-misc:evil-2:20260101-000000.log"
    mkfifo "${{dir}}/app-misc:evil-3:20260101-000000.log" && echo planted > "${{ROOT}}/planted-ran"
}}
[[ ${{EBUILD_PHASE}} == postinst ]] && gnspawn_plant
"""
FLOOD = """
gnspawn_flood() {
    local dir=${PORTAGE_TMPDIR}/gnspawn-elog i
    for i in $(seq 1000); do
        yes $'WARN: postinst\\nflood' | head -c 65536 > "${dir}/app-misc:flood-${i}:2026.log"
    done
    echo flooded > "${ROOT}/flooded"
}
[[ ${EBUILD_PHASE} == postinst ]] && gnspawn_flood
"""


def write_noisy(repo: Path, *versions: int) -> None:
    ebuilds = repo / "app-misc" / "noisy"
    ebuilds.mkdir(exist_ok=True)
    for version in versions:
        (ebuilds / f"noisy-{version}.ebuild").write_text(NOISY)


def notices(job: int) -> list[list[str]]:
    path = f"/org/gnspawn1/job/_{job}"
    out = busctl(
        "--json=short", "get-property", "org.gnspawn1", path, "org.gnspawn1.Job", "Notices"
    ).stdout
    return [list(notice) for notice in json.loads(out)["data"]]


def test_warnings_errors_and_logs_of_a_merge_are_the_jobs_notices(daemon: Testbed) -> None:
    write_noisy(daemon.repo, 1)
    root = daemon.seed("web", ["=app-misc/hello-2", "=app-misc/noisy-1"])
    write_noisy(daemon.repo, 2)

    result = gnctl("update", "web")

    assert result.returncode == 0, result.stdout + result.stderr
    assert (root / "usr/share/noisy/version").read_text() == "2\n"
    package = "app-misc/noisy-2"
    assert notices(1) == [
        ["elog", package, "warning", "the config format changed in 2\nrun noisy-migrate once"],
        ["elog", package, "err", "the old cache is gone"],
        ["elog", package, "info", "see the 2 release notes"],
    ]
    # gnctl shows the warnings and errors as they come, and every notice at the end.
    assert "elog: app-misc/noisy-2: the old cache is gone" in result.stdout
    assert "  err: elog app-misc/noisy-2: the old cache is gone" in result.stdout
    assert "merged fine" not in "\n".join(n[3] for n in notices(1))
    # In the journal, each with the package it is about.
    about = daemon.daemon_journal("GNSPAWN_JOB=1", f"GNSPAWN_PACKAGE={package}")
    assert len(about) == 3, about
    assert job_string(1, "Result") == "done"


def test_what_a_root_plants_among_its_elog_files_is_not_read(daemon: Testbed) -> None:
    write_noisy(daemon.repo, 1)
    root = daemon.seed("web", ["=app-misc/hello-2", "=app-misc/noisy-1"])
    write_noisy(daemon.repo, 2)
    # A host file in elog's own format: read through the link, it would be a notice.
    secret = daemon.dir / "host-secret.log"
    secret.write_text("WARN: postinst\nHOSTSECRET\n")
    secret_dir = daemon.dir / "host-secrets"
    secret_dir.mkdir(exist_ok=True)
    (root / "etc/portage/bashrc").write_text(PLANT.format(secret=secret, secret_dir=secret_dir))

    result = gnctl("update", "web")

    assert result.returncode == 0, result.stdout + result.stderr
    assert (root / "planted-ran").read_text() == "planted\n"
    subjects = {notice[1] for notice in notices(1)}
    assert subjects == {"app-misc/noisy-2"}, notices(1)
    assert "HOSTSECRET" not in result.stdout + result.stderr
    assert "HOSTSECRET" not in json.dumps(notices(1))


def test_a_flood_of_elog_files_is_cut_short(daemon: Testbed) -> None:
    write_noisy(daemon.repo, 1)
    root = daemon.seed("web", ["=app-misc/hello-2", "=app-misc/noisy-1"])
    write_noisy(daemon.repo, 2)
    (root / "etc/portage/bashrc").write_text(FLOOD)

    result = gnctl("update", "web", "-q")

    assert result.returncode == 0, result.stdout + result.stderr
    assert (root / "flooded").read_text() == "flooded\n"
    kept = notices(1)
    assert len(kept) == 200
    assert kept[-1][3].endswith("more notices not kept: see the job's log"), kept[-1]
    assert job_string(1, "Result") == "done"
