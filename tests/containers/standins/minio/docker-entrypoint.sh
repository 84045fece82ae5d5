#!/bin/sh
# As MinIO's: arguments without the program name are MinIO's.
set -e
if [ "$1" != "minio" ] && [ -n "$1" ] && ! command -v "$1" > /dev/null 2>&1; then
    set -- minio "$@"
fi
exec "$@"
