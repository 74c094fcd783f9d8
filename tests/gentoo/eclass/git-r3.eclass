# Stand-in for git-r3.eclass. As the real one, EGIT_OVERRIDE_REPO_<NAME> replaces
# EGIT_REPO_URI, NAME being the URI's path with non-alphanumerics as _ in capitals
# (file:///usr/src/gnspawn: USR_SRC_GNSPAWN). A file:// URI is copied as it is,
# work tree included, so that the test installs what is about to be committed.

PROPERTIES+=" live"

git-r3_src_unpack() {
	local uri=${EGIT_REPO_URI} name
	name=${uri#*://*/}
	name=${name%/}
	name=${name%.git}
	name=${name//[^a-zA-Z0-9_]/_}
	name=EGIT_OVERRIDE_REPO_${name^^}
	uri=${!name:-${uri}}
	[[ ${uri} == file://* && -d ${uri#file://} ]] || die "${ECLASS} stand-in: not a directory: ${uri}"
	mkdir -p "${EGIT_CHECKOUT_DIR:-${WORKDIR}/${P}}" || die
	cp -a "${uri#file://}/." "${EGIT_CHECKOUT_DIR:-${WORKDIR}/${P}}/" || die
}

EXPORT_FUNCTIONS src_unpack
