EAPI=8
DESCRIPTION="An upgrade that fails to compile, after hello-2 has been merged"
SLOT="0"
KEYWORDS="amd64"
RDEPEND=">=app-misc/hello-2"
S=${WORKDIR}

src_compile() {
	die "broken on purpose"
}
