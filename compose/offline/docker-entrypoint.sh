#!/bin/bash
# Entrypoint of the offline stand-in for postgres:N: honours the official image's contract.
#
# POSTGRES_USER (default postgres), POSTGRES_PASSWORD (required unless
# POSTGRES_HOST_AUTH_METHOD=trust), POSTGRES_DB (default $POSTGRES_USER),
# POSTGRES_INITDB_ARGS, PGDATA, and /docker-entrypoint-initdb.d/*.sh|*.sql|*.sql.gz.
# During init a temporary server listens on the unix socket only, so nothing
# reaching it over TCP can mistake the init phase for a ready server.
set -Eeo pipefail

log() { echo "$(date -u '+%Y-%m-%d %H:%M:%S') entrypoint: $*" >&2; }

if [ "${1:0:1}" = '-' ]; then
	set -- postgres "$@"
fi

if [ "$1" = 'postgres' ] && [ "$(id -u)" = '0' ]; then
	mkdir -p "$PGDATA" /var/run/postgresql
	chown -R postgres:postgres "$PGDATA" /var/run/postgresql
	chmod 700 "$PGDATA"
	chmod 3777 /var/run/postgresql
	# Re-run this script as postgres, with the same arguments.
	exec setpriv --reuid=postgres --regid=postgres --init-groups "$BASH_SOURCE" "$@"
fi

if [ "$1" != 'postgres' ]; then
	exec "$@"
fi

: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
export POSTGRES_USER POSTGRES_DB

psql_init() {
	psql -v ON_ERROR_STOP=1 --no-password --no-psqlrc --username "$POSTGRES_USER" "$@"
}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
	if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "${POSTGRES_HOST_AUTH_METHOD:-}" != 'trust' ]; then
		log "error: database is uninitialized and POSTGRES_PASSWORD is not set"
		log "set POSTGRES_PASSWORD (or POSTGRES_HOST_AUTH_METHOD=trust, not for production)"
		exit 1
	fi
	log "initialising database cluster in $PGDATA"
	pwfile=$(mktemp)
	printf '%s' "${POSTGRES_PASSWORD:-}" > "$pwfile"
	# shellcheck disable=SC2086
	initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --encoding=UTF8 \
		--locale=C.UTF-8 $POSTGRES_INITDB_ARGS -D "$PGDATA" > /dev/null
	rm -f "$pwfile"
	auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
	{
		echo "local all all trust"
		echo "host all all 127.0.0.1/32 trust"
		echo "host all all ::1/128 trust"
		echo "host all all all $auth"
	} > "$PGDATA/pg_hba.conf"
	echo "listen_addresses = '*'" >> "$PGDATA/postgresql.auto.conf"

	log "starting temporary server (unix socket only)"
	pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start > /dev/null

	if [ "$POSTGRES_DB" != 'postgres' ]; then
		psql_init --dbname postgres --set db="$POSTGRES_DB" <<-'EOSQL'
			CREATE DATABASE :"db";
		EOSQL
	fi

	for f in /docker-entrypoint-initdb.d/*; do
		[ -e "$f" ] || continue
		case "$f" in
			*.sh)
				if [ -x "$f" ]; then log "running $f"; "$f"; else log "sourcing $f"; . "$f"; fi ;;
			*.sql) log "running $f"; psql_init --dbname "$POSTGRES_DB" -f "$f" ;;
			*.sql.gz) log "running $f"; gunzip -c "$f" | psql_init --dbname "$POSTGRES_DB" ;;
			*) log "ignoring $f" ;;
		esac
	done

	pg_ctl -D "$PGDATA" -m fast -w stop > /dev/null
	log "init complete; ready for start up"
else
	log "database directory appears to contain a database; skipping initialization"
fi

exec "$@"
