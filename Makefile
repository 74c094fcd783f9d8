# Everything installs itself: `make check` and `make demo` work on a fresh Debian 12
# machine as root, and are safe to run again.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := zfs-fuse bubblewrap dbus systemd systemd-container util-linux busybox-static polkitd groff-base man-db python3-pip zsh tmux openssh-server openssh-client pax-utils
STAMP := $(VENV)/.installed

.PHONY: all check lint typecheck test demo bench deps apt-deps clean install uninstall dist
.PHONY: dbus-interfaces sandbox sandbox-stop

all: check

apt-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "Installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "gnspawn needs Python 3.11 or newer as $(PYTHON)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $@

deps: apt-deps $(STAMP)

lint: deps
	$(VENV)/bin/ruff check src tests contrib $(wildcard bench)
	$(VENV)/bin/ruff format --check src tests

typecheck: deps
	$(VENV)/bin/mypy

test: deps
	$(PY) -m pytest -p no:cacheprovider

check: lint typecheck test

demo: deps
	$(PY) contrib/demo.py

# The demo's bus, journald, pool and gnspawnd left running to practise on; it prints
# how to reach them. sandbox-stop stops each process it recorded, by its PID.
sandbox: deps
	$(PY) contrib/demo.py --keep

sandbox-stop:
	$(PYTHON) contrib/demo.py --stop

bench: deps
	cd bench && ../$(PY) run.py

# The interface files under dbus/interfaces are written by the code they describe;
# a test checks that they are current and that the running daemon says the same.
dbus-interfaces: deps
	$(VENV)/bin/gnspawnd --bus-introspect dbus/interfaces

clean:
	rm -rf $(VENV) build src/*.egg-info .mypy_cache .ruff_cache

# The release tarball: gnspawn-VERSION.tar.gz of the committed tree (HEAD), every file
# in gnspawn-VERSION/, as the versioned ebuild in contrib/gentoo expects it. VERSION
# is the package's, which pyproject.toml takes from gnspawn.__version__.
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' src/gnspawn/__init__.py)

dist:
	@test -n '$(VERSION)' || { echo "no __version__ in src/gnspawn/__init__.py"; exit 1; }
	@git diff --quiet HEAD || echo "make dist: changes not committed are left out (it packs HEAD)"
	git archive --format=tar.gz --prefix='gnspawn-$(VERSION)/' -o 'gnspawn-$(VERSION).tar.gz' HEAD

# Installation for packagers and admins: make install [DESTDIR=...] [PREFIX=/usr].
# PREFIX is /usr because the system bus and polkit read their files only from
# /usr/share (and /etc); with PREFIX=/usr/local set DBUS_POLICYDIR, DBUS_SERVICEDIR
# and POLKIT_ACTIONDIR to the /usr/share ones. SYSCONFDIR stays /etc, where gnspawnd
# looks for its configuration whatever the prefix.
PREFIX ?= /usr
SYSCONFDIR ?= /etc
BINDIR ?= $(PREFIX)/bin
DATADIR ?= $(PREFIX)/share
MANDIR ?= $(DATADIR)/man
DOCDIR ?= $(DATADIR)/doc/gnspawn
SYSTEMD_UNITDIR ?= $(PREFIX)/lib/systemd/system
DBUS_POLICYDIR ?= $(DATADIR)/dbus-1/system.d
DBUS_SERVICEDIR ?= $(DATADIR)/dbus-1/system-services
DBUS_INTERFACEDIR ?= $(DATADIR)/dbus-1/interfaces
POLKIT_ACTIONDIR ?= $(DATADIR)/polkit-1/actions
BASH_COMPLETIONDIR ?= $(DATADIR)/bash-completion/completions
ZSH_COMPLETIONDIR ?= $(DATADIR)/zsh/site-functions
# The package goes where $(PYTHON) imports from under PREFIX: the directory of its
# sys.path below PREFIX/lib (Debian: /usr/lib/python3/dist-packages, or
# /usr/local/lib/python3.X/dist-packages for /usr/local), else the posix_prefix
# scheme's (Gentoo and upstream Python: PREFIX/lib/python3.X/site-packages).
# pip's own --prefix would not do: it follows the interpreter's default scheme, which
# Debian patches to add /local, so the same command lands elsewhere on each system.
# pip --target writes exactly where it is told; the scripts it leaves in bin/ there
# are moved to BINDIR (their #! is $(PYTHON)). Building offline needs
# PIP_FLAGS=--no-build-isolation and setuptools>=77 with wheel for $(PYTHON).
PYTHON_SITEDIR ?= $(shell $(PYTHON) -c 'import sys, sysconfig; \
	under = [p for p in sys.path if p.startswith("$(PREFIX)/lib/") and p.endswith("-packages")]; \
	print(under[0] if under else sysconfig.get_path("purelib", "posix_prefix", \
	{"base": "$(PREFIX)", "platbase": "$(PREFIX)"}))')
PIP_FLAGS ?=
SITE = $(DESTDIR)$(PYTHON_SITEDIR)
UNITS := $(wildcard systemd/*.service systemd/*.timer)
MANPAGES := $(wildcard man/*.[1-8])
DBUS_INTERFACES := $(wildcard dbus/interfaces/*.xml)
ZSH_COMPLETION := $(wildcard contrib/completion/_gnctl)
# The units and the bus activation file name the programs by their /usr/bin path.
FIX_BINDIR = sed -e 's|=/usr/bin/|=$(BINDIR)/|'

install:
	@test -n "$(PYTHON_SITEDIR)" || { echo "cannot ask $(PYTHON) for its site directory"; exit 1; }
	$(PYTHON) -m pip install --quiet --no-deps --no-compile --upgrade $(PIP_FLAGS) \
		--target='$(SITE)' .
	install -d '$(DESTDIR)$(BINDIR)'
	for script in gnctl gnspawnd; do mv '$(SITE)/bin/'$$script '$(DESTDIR)$(BINDIR)/' || exit 1; done
	rmdir '$(SITE)/bin'
	@# As distributions' tools do: no RECORD (its script paths are pip's, not BINDIR)
	@# and no direct_url.json (the build directory); pip uninstall then names make.
	rm -f '$(SITE)'/gnspawn-*.dist-info/RECORD '$(SITE)'/gnspawn-*.dist-info/direct_url.json
	for info in '$(SITE)'/gnspawn-*.dist-info; do echo make > "$$info/INSTALLER"; done
	$(PYTHON) -m compileall -q -d '$(PYTHON_SITEDIR)/gnspawn' '$(SITE)/gnspawn'
	install -d '$(DESTDIR)$(SYSTEMD_UNITDIR)' '$(DESTDIR)$(DBUS_POLICYDIR)' \
		'$(DESTDIR)$(DBUS_SERVICEDIR)' '$(DESTDIR)$(POLKIT_ACTIONDIR)' \
		'$(DESTDIR)$(DBUS_INTERFACEDIR)' \
		'$(DESTDIR)$(SYSCONFDIR)/gnspawn' '$(DESTDIR)$(DOCDIR)' \
		'$(DESTDIR)$(BASH_COMPLETIONDIR)' '$(DESTDIR)$(ZSH_COMPLETIONDIR)' \
		$(foreach s,1 5 8,'$(DESTDIR)$(MANDIR)/man$(s)')
	for unit in $(UNITS); do \
		$(FIX_BINDIR) $$unit > '$(DESTDIR)$(SYSTEMD_UNITDIR)/'$${unit##*/} || exit 1; \
		chmod 0644 '$(DESTDIR)$(SYSTEMD_UNITDIR)/'$${unit##*/}; \
	done
	$(FIX_BINDIR) dbus/org.gnspawn1.service > '$(DESTDIR)$(DBUS_SERVICEDIR)/org.gnspawn1.service'
	chmod 0644 '$(DESTDIR)$(DBUS_SERVICEDIR)/org.gnspawn1.service'
	install -m 0644 dbus/org.gnspawn1.conf '$(DESTDIR)$(DBUS_POLICYDIR)/'
	install -m 0644 dbus/org.gnspawn1.policy '$(DESTDIR)$(POLKIT_ACTIONDIR)/'
	install -m 0644 $(DBUS_INTERFACES) '$(DESTDIR)$(DBUS_INTERFACEDIR)/'
	install -m 0644 README.md contrib/gnspawn.toml '$(DESTDIR)$(DOCDIR)/'
	@# An admin's configuration is never overwritten.
	test -e '$(DESTDIR)$(SYSCONFDIR)/gnspawn/gnspawn.toml' || \
		install -m 0644 contrib/gnspawn.toml '$(DESTDIR)$(SYSCONFDIR)/gnspawn/gnspawn.toml'
	install -m 0644 contrib/completion/gnctl.bash '$(DESTDIR)$(BASH_COMPLETIONDIR)/gnctl'
	$(if $(ZSH_COMPLETION),install -m 0644 $(ZSH_COMPLETION) '$(DESTDIR)$(ZSH_COMPLETIONDIR)/_gnctl')
	for page in $(MANPAGES); do \
		install -m 0644 $$page '$(DESTDIR)$(MANDIR)/man'$${page##*.}/ || exit 1; \
	done

# Removes what install put there, except a configuration the admin changed.
uninstall:
	rm -rf '$(SITE)/gnspawn' '$(SITE)'/gnspawn-*.dist-info
	rm -f '$(DESTDIR)$(BINDIR)/gnctl' '$(DESTDIR)$(BINDIR)/gnspawnd' \
		$(foreach u,$(UNITS),'$(DESTDIR)$(SYSTEMD_UNITDIR)/$(notdir $(u))') \
		'$(DESTDIR)$(DBUS_POLICYDIR)/org.gnspawn1.conf' \
		'$(DESTDIR)$(DBUS_SERVICEDIR)/org.gnspawn1.service' \
		'$(DESTDIR)$(POLKIT_ACTIONDIR)/org.gnspawn1.policy' \
		$(foreach i,$(DBUS_INTERFACES),'$(DESTDIR)$(DBUS_INTERFACEDIR)/$(notdir $(i))') \
		'$(DESTDIR)$(BASH_COMPLETIONDIR)/gnctl' '$(DESTDIR)$(ZSH_COMPLETIONDIR)/_gnctl' \
		$(foreach p,$(MANPAGES),'$(DESTDIR)$(MANDIR)/man$(subst .,,$(suffix $(p)))/$(notdir $(p))')
	rm -rf '$(DESTDIR)$(DOCDIR)'
	! cmp -s contrib/gnspawn.toml '$(DESTDIR)$(SYSCONFDIR)/gnspawn/gnspawn.toml' || \
		rm -f '$(DESTDIR)$(SYSCONFDIR)/gnspawn/gnspawn.toml'
	-rmdir '$(DESTDIR)$(SYSCONFDIR)/gnspawn' 2>/dev/null
