# kubelink — build, test and lab entry points. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# git describe; a tree with uncommitted changes adds their hash
# (lab/scripts/version.sh), so that each dirty state's images get a tag
# of their own.
VERSION ?= $(shell lab/scripts/version.sh)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS := -X github.com/kubelink/kubelink/lib/buildinfo.Version=$(VERSION) -X github.com/kubelink/kubelink/lib/buildinfo.Commit=$(COMMIT)
BINARIES := broker router bridge meshdns certwatch mcs verifier

export KUBELINK_CACHE ?= $(HOME)/.cache/kubelink
TOOLS := $(KUBELINK_CACHE)/tools
CONTROLLER_GEN := $(TOOLS)/controller-gen
STATICCHECK := $(TOOLS)/staticcheck
HELM := $(TOOLS)/helm
export CONTROLLER_GEN

# Packages of the product (go.work ties the modules together).
PKGS := ./lib/... $(foreach b,$(BINARIES),./cmd/$(b)/...) ./e2e/...

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z0-9-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# The static build configuration (no cgo, paths trimmed) of the binaries
# and images. make lint, the e2e runs and make test's packages that need
# client-go use it too, so that a cold machine compiles the libraries once
# for them instead of once each (-race needs cgo: its own configuration,
# which make test uses only for the data plane's packages, whose
# dependencies are small; lab/scripts/test.sh).
STATIC_GO := CGO_ENABLED=0 GOFLAGS="$$GOFLAGS -trimpath"

.PHONY: build
build: ## build every binary into bin/
	@mkdir -p bin
	@for b in $(BINARIES); do \
	  $(STATIC_GO) go build -ldflags "$(LDFLAGS)" -o bin/kubelink-$$b ./cmd/$$b || exit 1; done
	@ls bin

# kubelinkctl is its own module outside go.work (the Helm SDK needs newer
# Kubernetes modules); it embeds the chart, packaged here from deploy/chart.
# One build configuration for everything of kubelinkctl's module (the Helm
# SDK and Kubernetes v0.37 libraries, a second set next to lib's): build,
# vet, staticcheck, tests and the helm tool share their compiled packages,
# which saves two cold compiles of those libraries. Static (no cgo), so
# its tests run without -race (which needs cgo); the CLI is sequential.
KCTL_GO := GOWORK=off $(STATIC_GO)

.PHONY: kubelinkctl
kubelinkctl: $(HELM) ## build bin/kubelinkctl (and bin/kubectl-kubelink, the kubectl plugin) with the chart embedded
	@mkdir -p bin
	@rm -f cmd/kubelinkctl/chartdata/*.tgz
	$(HELM) package deploy/chart/kubelink -d cmd/kubelinkctl/chartdata >/dev/null
	cd cmd/kubelinkctl && $(KCTL_GO) go build -ldflags "$(LDFLAGS)" -o ../../bin/kubelinkctl .
	cp bin/kubelinkctl bin/kubectl-kubelink
	@echo "bin/kubelinkctl $$(bin/kubelinkctl version --client | head -1)"

.PHONY: deps
deps: ## install the Debian packages `make test` needs (only the missing ones; lab/scripts/deps.sh)
	@lab/scripts/deps.sh test

.PHONY: tools
tools: $(CONTROLLER_GEN) $(STATICCHECK) $(HELM) ## build the pinned dev tools (controller-gen, staticcheck, helm) into the cache

# The static configuration and the k8s.io module versions of lib: the
# libraries controller-gen compiles on a cold machine are the ones make lint
# compiles next, so they are compiled once. The other build modules under
# lab/tools (k8s, etcd, coredns, helm) keep their shared modules at lib's
# (helm: kubelinkctl's) versions for the same reason.
$(CONTROLLER_GEN) $(STATICCHECK): lab/tools/dev/go.mod lab/tools/dev/go.sum
	@mkdir -p $(TOOLS)
	cd lab/tools/dev && GOWORK=off $(STATIC_GO) go build -o $(CONTROLLER_GEN) sigs.k8s.io/controller-tools/cmd/controller-gen
	cd lab/tools/dev && GOWORK=off $(STATIC_GO) go build -o $(STATICCHECK) honnef.co/go/tools/cmd/staticcheck

# helm lint and helm template in the chart tests (lib/chart), and the lab's
# installs; its own module, so its Kubernetes modules stay out of go.work.
$(HELM): lab/tools/helm/go.mod lab/tools/helm/go.sum
	@mkdir -p $(TOOLS)
	cd lab/tools/helm && $(KCTL_GO) go build -o $(HELM) helm.sh/helm/v4/cmd/helm

.PHONY: test-bins
test-bins: ## build (once, cached) kube-apiserver, etcd, kubectl v1.34.4 and CoreDNS v1.14.0 from Go modules
	lab/scripts/k8s-bins.sh kube-apiserver etcd kubectl
	lab/scripts/coredns-bin.sh

.PHONY: generate
generate: $(CONTROLLER_GEN) ## regenerate deepcopy code and CRDs from the API types
	cd lib && $(CONTROLLER_GEN) object:headerFile="" paths=./apis/... \
	  crd:crdVersions=v1,maxDescLen=400 output:crd:dir=./apis/kubelink/crds
	cp lib/apis/kubelink/crds/*.yaml deploy/chart/kubelink/crds/
# The Multi-Cluster Services API's own CRDs (docs/mcs.md), from the
# mcs-api module lib is built with.
	cd lib && go mod download sigs.k8s.io/mcs-api
	dir=$$(cd lib && go list -m -f '{{.Dir}}' sigs.k8s.io/mcs-api) && test -n "$$dir" && \
	  install -m 0644 "$$dir"/config/crd/multicluster.x-k8s.io_*.yaml deploy/chart/kubelink/crds/
	cd lib && $(CONTROLLER_GEN) object:headerFile="" paths=./globaldns/apis/... \
	  crd:crdVersions=v1,maxDescLen=400 output:crd:dir=./globaldns/apis/coredns/crds

.PHONY: test
# -timeout: lib/clusterlab runs its two-cluster scenarios one after the other
# (270 s on 2 cores, 410–454 s with -race), close to go test's default of 10 min
# per package; a slow machine hit that limit in the middle of a passing test.
TEST_TIMEOUT ?= 30m
test: deps tools test-bins ## run all tests: unit, real kube-apiserver, (as root) real kernel networking (-race for the data plane; lab/scripts/test.sh)
	TEST_TIMEOUT=$(TEST_TIMEOUT) lab/scripts/test.sh $(PKGS)

.PHONY: test-race
test-race: deps tools test-bins ## make test with the race detector on every package (the controllers too: about 5 min more cold)
	TEST_RACE=all TEST_TIMEOUT=$(TEST_TIMEOUT) lab/scripts/test.sh $(PKGS)

.PHONY: test-kernel
test-kernel: ## boot a Debian kernel with WireGuard under qemu (no KVM needed) and run the kernel WireGuard tests inside it
	lab/scripts/test-kernel.sh

FLAKE_RUNS ?= 5
.PHONY: flake
flake: deps tools test-bins ## run `make test`'s tests FLAKE_RUNS times (default 5); list every test that failed at least once
	TEST_TIMEOUT=$(TEST_TIMEOUT) lab/scripts/flake.sh $(FLAKE_RUNS) $(PKGS)

.PHONY: lint
# One run each, with every tag that adds files: vet analyses the
# dependencies again for each set of tags, which cost a cold machine about
# 2.5 min in three more runs. (No file of ours is left out by a tag; one
# with `//go:build !<tag>` would need a run without it.)
LINT_TAGS := e2e,e2euninstall,e2escale,kernelwg
lint: $(STATICCHECK) ## go vet and staticcheck
	$(STATIC_GO) go vet -tags $(LINT_TAGS) $(PKGS)
	$(STATIC_GO) $(STATICCHECK) -tags $(LINT_TAGS) $(PKGS)
	cd cmd/kubelinkctl && $(KCTL_GO) go vet ./... && $(KCTL_GO) $(STATICCHECK) ./...

.PHONY: fuzz
fuzz: ## run each fuzz target (bridge frame decoder and HELLO parser, mesh model, endpoint parser, ingress policy, Corefile renderer, iptables-restore writer and -S parser) for FUZZTIME (default 60s)
	@for f in FuzzDecodeFrame FuzzParseHello; do \
	  go test -run '^$$' -fuzz "^$$f$$" -fuzztime $${FUZZTIME:-60s} ./lib/bridge/ || exit 1; done
	@for f in FuzzBuild FuzzParseEndpoint FuzzPolicyDecide; do \
	  go test -run '^$$' -fuzz "^$$f$$" -fuzztime $${FUZZTIME:-60s} ./lib/mesh/ || exit 1; done
	go test -run '^$$' -fuzz '^FuzzRender$$' -fuzztime $${FUZZTIME:-60s} ./lib/meshdns/
	go test -run '^$$' -fuzz '^FuzzRestoreInput$$' -fuzztime $${FUZZTIME:-60s} ./lib/netapply/

.PHONY: images
images: build ## build the container images with the running docker (its configuration untouched), tagged $(VERSION)
	lab/scripts/coredns-bin.sh
	lab/scripts/images.sh $(VERSION)

# The images a cluster runs (the lab's toolbox and CNI stay local).
PUSH_IMAGES := kubelink/broker kubelink/router kubelink/meshdns kubelink/certwatch kubelink/mcs kubelink/coredns kubelink/verifier
.PHONY: images-push
images-push: images ## push the images to REGISTRY=host:port (as REGISTRY/kubelink/<component>:$(VERSION)); install with image.registry=REGISTRY
	@[ -n "$(REGISTRY)" ] || { echo "images-push: set REGISTRY=host:port (e.g. REGISTRY=registry.example.com:5000)"; exit 2; }
	@for i in $(PUSH_IMAGES); do \
	  docker tag $$i:$(VERSION) $(REGISTRY)/$$i:$(VERSION) && docker push -q $(REGISTRY)/$$i:$(VERSION) || exit 1; \
	  docker rmi $(REGISTRY)/$$i:$(VERSION) >/dev/null; done
	@echo "pushed $(words $(PUSH_IMAGES)) images to $(REGISTRY), tag $(VERSION)"

LAB_MODE ?= wireguard
export LAB_MODE

.PHONY: lab-up
lab-up: build kubelinkctl $(HELM) ## start the offline two-cluster kind lab, kubelink installed with kubelinkctl (LAB_MODE=wireguard|bridge, LAB_INSTALL=kubelinkctl|helm)
	TAG=$(VERSION) lab/scripts/lab-up.sh

.PHONY: lab-build
lab-build: build ## build what make lab-up needs that needs no docker (kind, the node image's Kubernetes binaries, the registry, the Debian trees), cached; it starts no daemon, so it may run beside make test
	lab/scripts/lab-build.sh

.PHONY: lab-down
lab-down: ## remove the lab: clusters, their containers, volumes and network
	lab/scripts/lab-down.sh

.PHONY: e2e
e2e: kubelinkctl ## run the end-to-end tests (sigs.k8s.io/e2e-framework) against the running lab; each failover/DNS/link-Up scenario once, both ways
	cd e2e && $(STATIC_GO) go test -tags e2e -count=1 -timeout 30m -v ./... 2>&1 | tee $(KUBELINK_CACHE)/e2e.log; exit $${PIPESTATUS[0]}

.PHONY: e2e-uninstall
e2e-uninstall: kubelinkctl ## against the running lab: kubelinkctl uninstall of every cluster, then check that no kubelink state is left and planted state is (ends the lab's kubelink; make lab-up installs again)
	cd e2e && $(STATIC_GO) go test -tags e2e,e2euninstall -count=1 -timeout 15m -v -run '^TestUninstall$$' ./... 2>&1 | tee $(KUBELINK_CACHE)/e2e-uninstall.log; exit $${PIPESTATUS[0]}

.PHONY: bench
bench: test-bins ## measure the data planes and the broker at 25 and 250 links in one run; prints BENCH and RATIO lines (root; installs iperf3 etc. when missing)
	@lab/scripts/deps.sh bench
	@set -o pipefail; $(STATIC_GO) go test -count=1 -run '^$$' -bench . -benchtime 1x -timeout 20m ./lib/clusterlab/ ./lib/bridge/ \
	  | tee _bench.log | grep -E '^(BENCH|RATIO) '; rc=$$?; \
	  if [ $$rc -ne 0 ]; then cat _bench.log; fi; rm -f _bench.log; exit $$rc

# The measured scenarios of the e2e suite, repeated for their distributions.
LAB_BENCH_TESTS := ^(TestBrokerFailover|TestMeshDNSFollowsLinkHealth|TestLinkUpAfterApply)$$
.PHONY: lab-bench
lab-bench: ## against the running lab: repeat failover, DNS withdrawal/return and link Up E2E_RUNS times (default 5); prints BENCH min/median/max
	@mkdir -p $(KUBELINK_CACHE)
	@cd e2e && E2E_RUNS=$${E2E_RUNS:-5} $(STATIC_GO) go test -tags e2e -count=1 -timeout 90m -v -run '$(LAB_BENCH_TESTS)' . 2>&1 \
	  | tee $(KUBELINK_CACHE)/lab-bench.log | grep --line-buffered -E '^(BENCH|RATIO) |(FAILOVER [ab]|DNS [ab]|LINKUP) run|--- (PASS|FAIL)|^(FAIL|ok) '; \
	  rc=$${PIPESTATUS[0]}; if [ $$rc -ne 0 ]; then echo "lab-bench failed; the whole log: $(KUBELINK_CACHE)/lab-bench.log"; fi; exit $$rc

.PHONY: lab-scale
lab-scale: ## against the running lab: LAB_SCALE_LINKS (default 250) foreign KubeLinks applied to lab-a (endpoints on the broker pod's loopback), one changed five times, all deleted; prints BENCH lines (issue #33's goals)
	@mkdir -p $(KUBELINK_CACHE)
	@cd e2e && $(STATIC_GO) go test -tags e2e,e2escale -count=1 -timeout 30m -v -run '^TestScaleInTheLab$$' . 2>&1 \
	  | tee $(KUBELINK_CACHE)/lab-scale.log | grep --line-buffered -E '^(BENCH|RATIO) |--- (PASS|FAIL)|^(FAIL|ok) |scale_test.go'; \
	  rc=$${PIPESTATUS[0]}; if [ $$rc -ne 0 ]; then echo "lab-scale failed; the whole log: $(KUBELINK_CACHE)/lab-scale.log"; fi; exit $$rc

.PHONY: clean
clean: ## remove build output (the binary cache in ~/.cache/kubelink stays)
	rm -rf bin _out
