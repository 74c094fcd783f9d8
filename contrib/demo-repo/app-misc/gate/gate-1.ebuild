EAPI=8
DESCRIPTION="Installs fine; its upgrade can be stopped at pkg_preinst or pkg_postinst"
SLOT="0"
KEYWORDS="amd64"
S=${WORKDIR}

src_install() {
	insinto /usr/share/gate
	echo "${PV}" > "${T}/version" || die
	doins "${T}/version"
}
