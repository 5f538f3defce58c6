#!/bin/bash
# Readiness: the broker answers a Kafka ApiVersions request (version 0) on its client port
# with no error. bash's /dev/tcp speaks the protocol without starting a JVM per probe.
set -eu
port=${1:-9092}
exec 3<>"/dev/tcp/127.0.0.1/$port"
# Size 15, then the request header: api key 18 (ApiVersions), version 0, correlation id 7,
# client id "probe" (a v0 request has no body).
printf '\x00\x00\x00\x0f\x00\x12\x00\x00\x00\x00\x00\x07\x00\x05probe' >&3
reply=$(timeout 5 head -c 10 <&3 | od -An -tx1 | tr -d ' \n')
exec 3<&-
# After the 4-byte size: our correlation id, then error code 0.
[ "${reply:8:12}" = "000000070000" ]
