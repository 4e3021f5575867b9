#!/bin/sh
# deploy/redis.acl with a password for each user, taken from REDIS_<USER>_PASSWORD and written as its
# SHA-256 (the clear password never lands in the file):
#   REDIS_DISCOVERER_PASSWORD=... REDIS_XDS_PASSWORD=... sh deploy/redis-users.sh < deploy/redis.acl > users.acl
#   redis-server --aclfile users.acl
# A user whose variable is unset or empty gets no password: nobody can log in as it. POSIX sh + sha256sum.
set -eu
while read -r keyword name rules; do
  case "$name" in
    default) ;;
    *[!a-z]* | "") echo "redis-users.sh: unexpected user name '$name'" >&2; exit 1 ;;
    *)
      var="REDIS_$(printf %s "$name" | tr a-z A-Z)_PASSWORD"
      password=$(printenv "$var" || true)
      if [ -n "$password" ]; then
        rules="$rules #$(printf %s "$password" | sha256sum | cut -c1-64)"
      else
        echo "redis-users.sh: $var is not set: user $name keeps no password (nobody can log in as it)" >&2
      fi ;;
  esac
  printf '%s %s %s\n' "$keyword" "$name" "$rules"
done
