# `make run`: the whole pipeline on this machine (`quantcore up`), and grpcurl, the
# independent gRPC client the serving tests call the server with.
GRPCURL_VERSION := v1.9.4
GRPCURL := $(QUANTCORE_CACHE)/tools/grpcurl-$(GRPCURL_VERSION)/grpcurl
export GRPCURL
UP_ARGS ?=

.PHONY: grpcurl

run: setup services-deps services-jars prometheus-tools
	$(BIN)/quantcore up $(UP_ARGS)

grpcurl: $(GRPCURL)
$(GRPCURL): | cache
	GOBIN=$(dir $@) nice -n 10 go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)

TEST_PREREQS += grpcurl
