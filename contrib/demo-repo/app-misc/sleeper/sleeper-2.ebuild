EAPI=8
DESCRIPTION="An upgrade whose compile sleeps (GNSPAWN_DEMO_SLEEP seconds, default 300), after hello-2"
SLOT="0"
KEYWORDS="amd64"
RDEPEND=">=app-misc/hello-2"
S=${WORKDIR}

src_compile() {
	echo "compiling slowly"
	sleep "${GNSPAWN_DEMO_SLEEP:-300}" || die
}

src_install() {
	insinto /usr/share/sleeper
	echo "${PV}" > "${T}/version" || die
	doins "${T}/version"
}
