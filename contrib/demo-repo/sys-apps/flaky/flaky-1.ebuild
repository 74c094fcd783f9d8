# Fails to build while /run/gnspawn-demo-flaky exists: a build step that fails once.
EAPI=8
DESCRIPTION="A package whose build fails on demand"
SLOT="0"
KEYWORDS="amd64"
S=${WORKDIR}

src_compile() {
	[[ -e /run/gnspawn-demo-flaky ]] && die "flaky on purpose (/run/gnspawn-demo-flaky exists)"
	echo ok > flaky.txt || die
}

src_install() {
	insinto /usr/share/flaky
	doins flaky.txt
}
