#!/bin/sh
# Runs one KRaft broker+controller from /opt/kafka/libs with $KAFKA_CONFIG. The log directory
# (log.dirs in the config) is formatted once, with a new cluster id; a restart that finds it
# formatted keeps its topics. Arguments after the config are passed to kafka.Kafka
# (e.g. --override advertised.listeners=...).
set -eu
java_opts="$KAFKA_HEAP_OPTS -XX:+UseG1GC -XX:-UsePerfData -Djava.awt.headless=true -Dlog4j2.configurationFile=$KAFKA_LOG4J"
classpath='/opt/kafka/libs/*'
log_dirs=$(sed -n 's/^log\.dirs=//p' "$KAFKA_CONFIG" | tail -n 1)
if [ -z "$log_dirs" ]; then
  echo "kafka-entrypoint: $KAFKA_CONFIG sets no log.dirs" >&2
  exit 2
fi
if [ ! -f "${log_dirs%%,*}/meta.properties" ]; then
  # shellcheck disable=SC2086 # java_opts is a list of options
  cluster_id=$(java $java_opts -cp "$classpath" kafka.tools.StorageTool random-uuid)
  # shellcheck disable=SC2086
  java $java_opts -cp "$classpath" kafka.tools.StorageTool format \
    --config "$KAFKA_CONFIG" --cluster-id "$cluster_id" --ignore-formatted
fi
# shellcheck disable=SC2086
exec java $java_opts -cp "$classpath" kafka.Kafka "$KAFKA_CONFIG" "$@"
