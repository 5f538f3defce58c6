#!/bin/sh
# Runs one KRaft broker+controller from /opt/kafka/libs with $KAFKA_CONFIG. The log directory
# (log.dirs in the config) is formatted once, with a new cluster id; a restart that finds it
# formatted keeps its topics. Arguments after the config are passed to kafka.Kafka
# (e.g. --override advertised.listeners=...).
#
# When $KAFKA_USERS_DIR holds files (a mounted Secret: file name = user, content = password),
# each becomes a SCRAM-SHA-512 user in the storage it formats, so the broker never runs a
# moment without its users. The passwords go to the storage tool through a java argument file
# (mode 0600, removed at once), never on a command line.
set -eu
java_opts="$KAFKA_HEAP_OPTS -XX:+UseG1GC -XX:-UsePerfData -Djava.awt.headless=true -Dlog4j2.configurationFile=$KAFKA_LOG4J"
classpath=${KAFKA_CLASSPATH:-'/opt/kafka/libs/*'}
users_dir=${KAFKA_USERS_DIR:-/etc/quantcore-kafka-users}
log_dirs=$(sed -n 's/^log\.dirs=//p' "$KAFKA_CONFIG" | tail -n 1)
if [ -z "$log_dirs" ]; then
  echo "kafka-entrypoint: $KAFKA_CONFIG sets no log.dirs" >&2
  exit 2
fi
if [ ! -f "${log_dirs%%,*}/meta.properties" ]; then
  # shellcheck disable=SC2086 # java_opts is a list of options
  cluster_id=$(java $java_opts -cp "$classpath" kafka.tools.StorageTool random-uuid | tail -n 1)
  argfile=$(mktemp "${TMPDIR:-/tmp}/kafka-format.XXXXXX")  # mode 0600
  trap 'rm -f "$argfile" "$argfile.out"' EXIT
  printf '%s\n' kafka.tools.StorageTool format --config "$KAFKA_CONFIG" \
    --cluster-id "$cluster_id" --ignore-formatted > "$argfile"
  if [ -d "$users_dir" ]; then
    for file in "$users_dir"/*; do
      [ -f "$file" ] || continue
      # Secret keys are [-._a-zA-Z0-9]; generated passwords are URL-safe base64: no quoting.
      printf '%s\n' --add-scram \
        "SCRAM-SHA-512=[name=$(basename "$file"),password=$(cat "$file")]" >> "$argfile"
    done
  fi
  # The tool repeats its arguments when it refuses them: never let a password reach the log.
  # shellcheck disable=SC2086
  if ! java $java_opts -cp "$classpath" "@$argfile" > "$argfile.out" 2>&1; then
    sed 's/password=[^],]*/password=***/g' "$argfile.out" >&2
    rm -f "$argfile" "$argfile.out"
    exit 1
  fi
  sed 's/password=[^],]*/password=***/g' "$argfile.out"
  rm -f "$argfile" "$argfile.out"
  trap - EXIT
fi
# shellcheck disable=SC2086
exec java $java_opts -cp "$classpath" kafka.Kafka "$KAFKA_CONFIG" "$@"
