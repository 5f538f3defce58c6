# Local Kafka, Redis and Spark (quantcore.devservices). Jars are resolved with mvn into
# $(QUANTCORE_CACHE), keyed by version; system packages come from apt-get when missing.
SERVICES_DIR ?= .dev/services
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: services-deps services-jars services-up services-down services-status

# java (Kafka, Spark), maven (jar resolution) and redis-server, installed only when missing.
services-deps:
	@missing=(); \
	command -v java >/dev/null || missing+=(openjdk-17-jre-headless); \
	command -v mvn >/dev/null || missing+=(maven); \
	command -v redis-server >/dev/null || missing+=(redis-server); \
	if (( $${#missing[@]} )); then \
	  echo "installing $${missing[*]}"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$${missing[@]}"; \
	fi

# Kafka broker/tools jars and the Spark Kafka connector, so tests never download mid-run.
services-jars: setup services-deps
	nice -n 10 $(BIN)/quantcore services jars

TEST_PREREQS += services-jars

services-up: setup services-deps
	$(BIN)/quantcore services up --dir $(SERVICES_DIR)

services-down: setup
	$(BIN)/quantcore services down --dir $(SERVICES_DIR)

services-status: setup
	$(BIN)/quantcore services status --dir $(SERVICES_DIR)
