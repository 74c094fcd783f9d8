EAPI=8
DESCRIPTION="Installs fine; its upgrade takes a few seconds to compile"
SLOT="0"
KEYWORDS="amd64"
S=${WORKDIR}

src_install() {
	insinto /usr/share/slow
	echo "${PV}" > "${T}/version" || die
	doins "${T}/version"
}
