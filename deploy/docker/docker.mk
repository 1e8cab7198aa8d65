# Docker targets for the top-level Makefile (`include deploy/docker/docker.mk`).
# No image can be pulled here: `make images` builds local stand-ins under the
# tags docker-compose.yml uses, on the engine `make docker-engine-up` starts.
# See deploy/docker/README.md and deploy/images/README.md.

DOCKER_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
DOCKER_ENGINE_SH := $(DOCKER_DIR)/engine.sh
IMAGES_BUILD_SH := $(DOCKER_DIR)/../images/build.sh

.PHONY: docker-engine-up docker-engine-down docker-engine-status docker-engine-check images

docker-engine-up: ## start (or reuse) a Docker engine (then eval the output of deploy/docker/engine.sh env)
	bash $(DOCKER_ENGINE_SH) up

docker-engine-down: ## stop the private Docker engine by its pid file (images stay cached)
	bash $(DOCKER_ENGINE_SH) down

docker-engine-status: ## tell whether a Docker engine answers (fails when none does)
	bash $(DOCKER_ENGINE_SH) status

docker-engine-check: ## prove 127.0.0.1 port publishing and container-to-container traffic work
	bash $(DOCKER_ENGINE_SH) check

images: ## build the stand-in images (Kafka, Prometheus, Alertmanager, app); cached by content hash
	bash $(IMAGES_BUILD_SH)
