#!/usr/bin/env bash
# Builds a stand-in for postgres:17 from Debian packages, for hosts with no container registry.
#
# Usage: compose/build-offline-image.sh [--tag NAME] [--force]
#
#   --tag NAME   tag to give the image (default: postgres:17, so provision's defaults use it)
#   --force      rebuild even if the image exists
#
# Steps: debootstrap a minimal Debian trixie with postgresql-17 (needs root and
# Debian's package mirror), `docker import` it as provision-offline/trixie-postgresql:17,
# then build compose/offline/Dockerfile on top of it. Every step is skipped when its
# result already exists, so running it again costs about a second.
# It refuses to overwrite a tag that holds an image it did not build.
set -euo pipefail

tag="postgres:17"
force=0
while [ $# -gt 0 ]; do
	case "$1" in
		--tag) tag="$2"; shift 2 ;;
		--force) force=1; shift ;;
		-h|--help) sed -n '2,13p' "$0"; exit 0 ;;
		*) echo "build-offline-image: unknown argument: $1" >&2; exit 2 ;;
	esac
done

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
base="provision-offline/trixie-postgresql:17"
suite="${PROVISION_DEBIAN_SUITE:-trixie}"
mirror="${PROVISION_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

say() { echo "build-offline-image: $*" >&2; }

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
	trap 'rm -rf "$root"' EXIT
	say "debootstrap $suite with postgresql-17 into $root (about a minute)"
	# The package's postinst would create and start a default cluster; the policy
	# file keeps services from starting, and the cluster is removed below.
	mkdir -p "$root/usr/sbin" "$root/etc/postgresql-common/createcluster.d"
	printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
	chmod 755 "$root/usr/sbin/policy-rc.d"
	echo "create_main_cluster = false" > "$root/etc/postgresql-common/createcluster.d/provision.conf"
	debootstrap --variant=minbase --include=postgresql-17 "$suite" "$root" "$mirror" > "$root.log" 2>&1 || {
		say "debootstrap failed; last lines of its log:"; tail -n 20 "$root.log" >&2; exit 1; }
	rm -f "$root.log"
	rm -rf "$root"/var/lib/postgresql/17 "$root"/etc/postgresql/17 "$root"/var/cache/apt/archives/*.deb \
		"$root"/var/lib/apt/lists/*
	say "importing as $base"
	tar -C "$root" -c . | docker import - "$base" > /dev/null
	rm -rf "$root"
	trap - EXIT
fi

say "building $tag on $base"
docker build -q --build-arg "BASE=$base" -t "$tag" "$here/offline" > /dev/null
say "built $tag"
