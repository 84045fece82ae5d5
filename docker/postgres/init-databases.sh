#!/bin/sh
# Runs once, when the PostgreSQL volume is first initialised: one database per metadata store
# (POSTGRES_DB, the first, is created by the image itself), all owned by POSTGRES_USER.
set -eu
for db in ${METADATA_DATABASES}; do
    if [ "$db" != "$POSTGRES_DB" ]; then
        echo "creating database $db"
        psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
            -c "CREATE DATABASE \"$db\" OWNER \"$POSTGRES_USER\";"
    fi
done
