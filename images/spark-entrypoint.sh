#!/bin/bash
# Entry point of the QuantCore Spark image (images/Dockerfile.spark), run under tini.
#
# Spark's Kubernetes backend starts every pod of this image with a first argument:
#   driver ARGS...   -> spark-submit in client mode inside the driver pod, bound to the pod's
#                       address ($SPARK_DRIVER_BIND_ADDRESS, the pod IP), with ARGS
#                       (--properties-file, --class, the application and its arguments);
#   executor         -> the executor JVM (KubernetesExecutorBackend), configured by the
#                       environment the backend sets on executor pods (SPARK_DRIVER_URL,
#                       SPARK_EXECUTOR_ID/_CORES/_MEMORY/_POD_IP/_POD_NAME, SPARK_APPLICATION_ID,
#                       SPARK_RESOURCE_PROFILE_ID, SPARK_JAVA_OPT_<n>, SPARK_CLASSPATH,
#                       SPARK_CONF_DIR);
# anything else is executed as given (`spark-submit --version`, `bash`, a test command).
#
# Read-only root filesystem: nothing here writes outside /tmp and the working directory
# (/opt/spark/work-dir), the two emptyDir mounts the pods need.
set -euo pipefail

die() {
  echo "spark-entrypoint: $*" >&2
  exit 64
}

# JAVA_HOME differs by architecture in Debian's packages: take it from the java on PATH.
if [[ -z "${JAVA_HOME:-}" ]]; then
  java_bin=$(readlink -f "$(command -v java)") || die "no java on PATH"
  export JAVA_HOME=${java_bin%/bin/java}
fi
[[ -n "${SPARK_HOME:-}" && -x "$SPARK_HOME/bin/spark-submit" ]] \
  || die "SPARK_HOME (${SPARK_HOME:-unset}) holds no bin/spark-submit"

# The class path the executor JVM gets: configuration directory first (log4j, properties),
# then Spark's jars, then what spark.executor.extraClassPath put in SPARK_CLASSPATH, then the
# working directory (files the driver ships there, as Spark's own image does).
executor_classpath() {
  local conf_dir=${SPARK_CONF_DIR:-$SPARK_HOME/conf}
  local path="$conf_dir:$SPARK_HOME/jars/*"
  [[ -n "${HADOOP_CONF_DIR:-}" ]] && path="$HADOOP_CONF_DIR:$path"
  [[ -n "${SPARK_CLASSPATH:-}" ]] && path="$path:$SPARK_CLASSPATH"
  [[ -n "${SPARK_DIST_CLASSPATH:-}" ]] && path="$path:$SPARK_DIST_CLASSPATH"
  printf '%s:%s' "$path" "$PWD"
}

# SPARK_JAVA_OPT_0, _1, ... in numeric order (a name sort would put _10 before _2).
executor_java_opts=()
collect_java_opts() {
  local name
  while read -r name; do
    executor_java_opts+=("${!name}")
  done < <(compgen -v SPARK_JAVA_OPT_ | sort -t_ -k4,4n)
}

require_env() {
  local name
  for name in "$@"; do
    [[ -n "${!name:-}" ]] || die "executor: $name is not set (Spark's Kubernetes backend sets it)"
  done
}

case "${1:-}" in
  driver)
    shift
    [[ -n "${SPARK_DRIVER_BIND_ADDRESS:-}" ]] || die "driver: SPARK_DRIVER_BIND_ADDRESS is not set"
    exec "$SPARK_HOME/bin/spark-submit" \
      --deploy-mode client \
      --conf "spark.driver.bindAddress=$SPARK_DRIVER_BIND_ADDRESS" \
      --conf "spark.executorEnv.SPARK_DRIVER_POD_IP=$SPARK_DRIVER_BIND_ADDRESS" \
      "$@"
    ;;
  executor)
    shift
    require_env SPARK_DRIVER_URL SPARK_EXECUTOR_ID SPARK_EXECUTOR_CORES SPARK_EXECUTOR_MEMORY \
      SPARK_APPLICATION_ID SPARK_EXECUTOR_POD_IP SPARK_EXECUTOR_POD_NAME
    collect_java_opts
    exec "$JAVA_HOME/bin/java" \
      "${executor_java_opts[@]}" \
      "-Xms$SPARK_EXECUTOR_MEMORY" "-Xmx$SPARK_EXECUTOR_MEMORY" \
      -cp "$(executor_classpath)" \
      org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
      --driver-url "$SPARK_DRIVER_URL" \
      --executor-id "$SPARK_EXECUTOR_ID" \
      --cores "$SPARK_EXECUTOR_CORES" \
      --app-id "$SPARK_APPLICATION_ID" \
      --hostname "$SPARK_EXECUTOR_POD_IP" \
      --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID:-0}" \
      --podName "$SPARK_EXECUTOR_POD_NAME"
    ;;
  "")
    die "usage: driver ARGS... | executor | COMMAND [ARGS...]"
    ;;
  *)
    exec "$@"
    ;;
esac
