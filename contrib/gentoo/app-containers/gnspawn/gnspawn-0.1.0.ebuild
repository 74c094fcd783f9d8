# Copyright 2026 gnspawn authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

DISTUTILS_USE_PEP517=setuptools
PYTHON_COMPAT=( python3_{11..13} )

inherit distutils-r1 shell-completion systemd

# gnspawn-9999 and gnspawn-VERSION are the same file: the live one builds the
# checkout kept in /usr/src/gnspawn (point EGIT_REPO_URI elsewhere in a copy of
# this file to build another clone or mirror); a versioned one builds the release
# tarball that `make dist` writes, copied into DISTDIR by hand.
if [[ ${PV} == 9999 ]]; then
	inherit git-r3
	EGIT_REPO_URI="file:///usr/src/gnspawn"
else
	SRC_URI="${P}.tar.gz"
	KEYWORDS="~amd64"
	RESTRICT="fetch"
fi

DESCRIPTION="Gentoo containers for systemd-nspawn on ZFS: builds and transactional updates"

LICENSE="GPL-2+"
SLOT="0"
# The tests start zfs-fuse, dbus-daemon, journald and polkitd as root.
RESTRICT+=" test"

# gnspawnd runs zfs, emerge (under bwrap and setpriv) and systemd-nspawn as
# commands and asks systemd, machined and polkit over the system bus.
RDEPEND="
	>=dev-python/dbus-fast-4.0[${PYTHON_USEDEP}]
	<dev-python/dbus-fast-6[${PYTHON_USEDEP}]
	sys-apps/bubblewrap
	sys-apps/portage
	sys-apps/systemd
	sys-apps/util-linux
	sys-auth/polkit
	sys-fs/zfs
"

pkg_nofetch() {
	einfo "${A} is gnspawn's release tarball: run 'make dist' in a checkout of"
	einfo "gnspawn ${PV} and copy ${A} into ${DISTDIR}."
}

src_install() {
	distutils-r1_src_install

	systemd_dounit systemd/gnspawnd.service systemd/gnspawn-update.service \
		systemd/gnspawn-update.timer

	insinto /usr/share/dbus-1/system.d
	doins dbus/org.gnspawn1.conf
	insinto /usr/share/dbus-1/system-services
	doins dbus/org.gnspawn1.service
	insinto /usr/share/polkit-1/actions
	doins dbus/org.gnspawn1.policy
	insinto /usr/share/dbus-1/interfaces
	doins dbus/interfaces/*.xml

	doman man/gnctl.1 man/gnspawn.toml.5 man/gnspawnd.8
	newbashcomp contrib/completion/gnctl.bash gnctl
	dozshcomp contrib/completion/_gnctl

	# CONFIG_PROTECT keeps an admin's changes: an update leaves ._cfg files.
	insinto /etc/gnspawn
	doins contrib/gnspawn.toml
	dodoc contrib/gnspawn.toml
}

pkg_postinst() {
	if [[ -z ${REPLACING_VERSIONS} ]]; then
		elog "Set [storage] dataset in /etc/gnspawn/gnspawn.toml to a ZFS dataset of"
		elog "your pool, check it with 'gnspawnd --check-config', then start the daemon"
		elog "and the weekly updates:"
		elog "  systemctl reload dbus.service"
		elog "  systemctl enable --now gnspawnd.service gnspawn-update.timer"
		elog "See gnctl(1), gnspawnd(8) and gnspawn.toml(5)."
	fi
}
