#!/bin/sh
# Regenerates the rsync filter of every user listed in /etc/dataport/rsync/users (one per line).
# Each filter is written atomically; a user who no longer exists gets an empty filter (`- *`).
set -eu
conf_dir=${DATAPORT_RSYNC_DIR:-/etc/dataport/rsync}
config=${DATAPORT_CONFIG:-/etc/dataport/dataport.yaml}
status=0
while IFS= read -r user; do
  case "$user" in ''|'#'*) continue ;; esac
  if ! dataport rsync-filter --config "$config" --user "$user" --output "$conf_dir/$user.filter"; then
    echo "- *" > "$conf_dir/.$user.filter.tmp" && mv "$conf_dir/.$user.filter.tmp" "$conf_dir/$user.filter"
    status=1
  fi
done < "$conf_dir/users"
exit $status
