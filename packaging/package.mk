# Packaging targets, included from the top-level Makefile.
#   make package      .deb and .rpm into dist/
#   make rules-check  promtool check and unit tests for the Prometheus rules
# Variables from the Makefile: GO, BIN, VERSION.

GOARCH           ?= $(shell $(GO) env GOARCH)
# Package versions must start with a digit; an untagged tree becomes
# 0.0.0+git<describe>, which sorts below any tagged release.
PKG_VERSION      ?= $(shell v=$$(git describe --tags --match 'v[0-9]*' 2>/dev/null) && echo "$${v\#v}" | tr - . || echo "0.0.0+git$$(git describe --always --dirty 2>/dev/null | tr - .)")
# Reproducible man page dates: the last commit's time, not now.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
STAGE            := dist/stage

.PHONY: package package-stage rules-check

# What nfpm takes from outside git: man pages and completions generated from
# the command tree, by a build of it with the gen-docs command (the gendocs
# tag; the shipped binary leaves the generator out).
package-stage: build
	rm -rf $(STAGE)
	mkdir -p $(STAGE)
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) $(GO) run -tags gendocs ./cmd/gpuwarden gen-docs --out $(STAGE)
	gzip -9n $(STAGE)/man/*.1

package: package-stage
	rm -f dist/gpuwarden_*.deb dist/gpuwarden-*.rpm
	for p in deb rpm; do \
	  GOARCH=$(GOARCH) GPUWARDEN_VERSION=$(PKG_VERSION) SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) \
	    $(GO) tool nfpm package --config packaging/nfpm.yaml --packager $$p --target dist/ || exit 1; \
	done
	@ls -l dist/*.deb dist/*.rpm

rules-check:
	promtool check rules packaging/prometheus/gpuwarden-rules.yml
	cd packaging/prometheus && promtool test rules gpuwarden-rules.test.yml
