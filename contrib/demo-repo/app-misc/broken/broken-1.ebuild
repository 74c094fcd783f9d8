EAPI=8
DESCRIPTION="Installs fine; its upgrade does not build"
SLOT="0"
KEYWORDS="amd64"
S=${WORKDIR}

src_install() {
	insinto /usr/share/broken
	echo "${PV}" > "${T}/version" || die
	doins "${T}/version"
}
