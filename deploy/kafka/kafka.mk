# Kafka targets for the top-level Makefile (`include deploy/kafka/kafka.mk`).
# They run deploy/kafka/kafka.sh; its settings come from the environment or the
# make command line, e.g. `make kafka-up KAFKA_PORT=19092`. See deploy/kafka/README.md.

KAFKA_SH := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))/kafka.sh
KAFKA_KCAT_SH := $(dir $(KAFKA_SH))install-kcat.sh

.PHONY: kafka-up kafka-down kafka-status kafka-clean kafka-fetch kafka-kcat

kafka-up: ## start a local single-node Kafka (KRaft) broker on 127.0.0.1:KAFKA_PORT (default 9092)
	bash $(KAFKA_SH) up

kafka-down: ## stop it (by its pid file)
	bash $(KAFKA_SH) down

kafka-status: ## tell whether it runs (fails when it does not)
	bash $(KAFKA_SH) status

kafka-clean: ## stop it and delete its data dir
	bash $(KAFKA_SH) down --purge

kafka-fetch: ## resolve the broker jars from Maven Central into the cache
	bash $(KAFKA_SH) fetch

kafka-kcat: ## install the kcat client (Debian package)
	bash $(KAFKA_KCAT_SH)
