#!/bin/sh
# First start (no PG_VERSION in $PGDATA): initdb, listen on every interface of the container, let clients from
# the network in with a password (scram-sha-256), or without one if POSTGRES_HOST_AUTH_METHOD=trust, and create
# POSTGRES_DB owned by POSTGRES_USER. Later starts reuse the volume as it is. Then the server replaces this shell
# (PID 1), with any arguments given as extra server options (`-c name=value`).
set -eu
: "${POSTGRES_USER:=morphserve}"
: "${POSTGRES_DB:=morphserve}"
: "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ "$POSTGRES_HOST_AUTH_METHOD" != trust ] && [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "postgres: set POSTGRES_PASSWORD (or POSTGRES_HOST_AUTH_METHOD=trust to accept any client of the network)" >&2
    exit 1
  fi
  pwfile=""
  if [ -n "${POSTGRES_PASSWORD:-}" ]; then
    pwfile="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
  fi
  # Local (socket) connections inside the container are trusted; TCP ones need the password.
  initdb --username="$POSTGRES_USER" --auth-local=trust --auth-host="$POSTGRES_HOST_AUTH_METHOD" \
    --encoding=UTF8 --locale=C.UTF-8 ${pwfile:+--pwfile="$pwfile"} >/dev/null
  if [ -n "$pwfile" ]; then rm -f "$pwfile"; fi
  echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
  echo "host all all all $POSTGRES_HOST_AUTH_METHOD" >> "$PGDATA/pg_hba.conf"
  if [ "$POSTGRES_DB" != postgres ]; then
    echo "CREATE DATABASE \"$POSTGRES_DB\" OWNER \"$POSTGRES_USER\";" \
      | postgres --single -D "$PGDATA" postgres >/dev/null
  fi
  echo "postgres: initialised $PGDATA (user $POSTGRES_USER, database $POSTGRES_DB, auth $POSTGRES_HOST_AUTH_METHOD)"
fi
exec postgres -D "$PGDATA" "$@"
