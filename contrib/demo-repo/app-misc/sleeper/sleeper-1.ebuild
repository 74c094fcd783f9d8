EAPI=8
DESCRIPTION="Installs fine; its upgrade takes long to compile"
SLOT="0"
KEYWORDS="amd64"
S=${WORKDIR}

src_install() {
	insinto /usr/share/sleeper
	echo "${PV}" > "${T}/version" || die
	doins "${T}/version"
}
