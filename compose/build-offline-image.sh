#!/usr/bin/env bash
# Builds a stand-in for postgres:N (15, 17 or 18, optionally with pgvector/PostGIS) from Debian packages, for hosts with no container registry.
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
# Debian suite (bookworm, bookworm-backports, trixie, sid), so it cannot be built here: use the
# official postgres:16 from a registry. PROVISION_DEBIAN_SUITE overrides the suite.
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
		-h|--help) sed -n '2,21p' "$0"; exit 0 ;;
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
	16) say "PostgreSQL 16 is in no Debian suite (bookworm, bookworm-backports, trixie, sid); use the official postgres:16 image from a registry, or 15, 17 or 18 here"; exit 2 ;;
	*) say "PostgreSQL $major cannot be built here; this script builds 15, 17 and 18"; exit 2 ;;
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
if [ "$major" = 15 ] && printf '%s\n' "${packages[@]}" | grep -q pgvector; then
	say "Debian bookworm has no postgresql-15-pgvector; pgvector is available for 17 and 18 here"
	exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
suite="${PROVISION_DEBIAN_SUITE:-$default_suite}"
base="provision-offline/$suite-postgresql:$major"
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
	say "debootstrap $suite with postgresql-$major into $root (about a minute)"
	# The package's postinst would create and start a default cluster; the policy
	# file keeps services from starting, and the cluster is removed below.
	mkdir -p "$root/usr/sbin" "$root/etc/postgresql-common/createcluster.d"
	printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
	chmod 755 "$root/usr/sbin/policy-rc.d"
	echo "create_main_cluster = false" > "$root/etc/postgresql-common/createcluster.d/provision.conf"
	debootstrap --variant=minbase --include="postgresql-$major" "$suite" "$root" "$mirror" > "$root.log" 2>&1 || {
		say "debootstrap failed; last lines of its log:"; tail -n 20 "$root.log" >&2; exit 1; }
	rm -rf "$root"/var/lib/postgresql/"$major" "$root"/etc/postgresql/"$major" "$root"/var/cache/apt/archives/*.deb \
		"$root"/var/lib/apt/lists/*
	say "importing as $base"
	tar -C "$root" -c . | docker import - "$base" > /dev/null
	rm -rf "$root" "$root.log"
	trap - EXIT
fi

say "building $tag on $base${packages[*]:+ with ${packages[*]}}"
docker build -q --build-arg "BASE=$base" --build-arg "PG_MAJOR=$major" \
	--build-arg "PACKAGES=${packages[*]:-}" --build-arg "EXTENSIONS=$extensions" \
	-t "$tag" "$here/offline" > /dev/null
say "built $tag"
