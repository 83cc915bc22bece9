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

# The packaged binary runs on glibc 2.17 and newer (RHEL/CentOS 7, Ubuntu
# 18.04, Debian 9 on): it is linked by a crosstool-NG toolchain (gcc 4.8.5)
# whose sysroot is glibc 2.17, from the npm registry, checked against the
# archive's SHA-256 and unpacked once into .toolchain/. The same sysroot's
# loader runs the binary under glibc 2.17 in the tests. nfpm.yaml declares
# that floor. `make build` keeps the system compiler and needs none of this.
TOOLCHAIN_NPM    := @napi-rs/cross-toolchain-x64-target-x86_64@1.0.0
TOOLCHAIN_SHA256 := 0f5a5b44b6a02bdca6fa71a2bdf67cafb0c1b35c2bcbe3b29ff15ff2e8f9fad5
TOOLCHAIN_DIR    := .toolchain/x86_64-unknown-linux-gnu
TOOLCHAIN_CC     := $(TOOLCHAIN_DIR)/bin/x86_64-unknown-linux-gnu-gcc
PKG_BIN          := $(STAGE)/bin/gpuwarden

.PHONY: package package-stage package-bin toolchain rules-check

toolchain: $(TOOLCHAIN_CC)

$(TOOLCHAIN_CC):
	@command -v npm >/dev/null || { echo "make toolchain: npm is needed to fetch the glibc 2.17 toolchain (Node.js's npm, or apt-get install npm)" >&2; exit 1; }
	rm -rf .toolchain/fetch $(TOOLCHAIN_DIR).tmp
	mkdir -p .toolchain/fetch $(TOOLCHAIN_DIR).tmp
	cd .toolchain/fetch && npm pack --silent --pack-destination . $(TOOLCHAIN_NPM) >/dev/null
	tar -xzf .toolchain/fetch/*.tgz -C .toolchain/fetch package/x86_64-unknown-linux-gnu.tar.xz
	echo "$(TOOLCHAIN_SHA256)  .toolchain/fetch/package/x86_64-unknown-linux-gnu.tar.xz" | sha256sum -c --quiet
	tar -xJf .toolchain/fetch/package/x86_64-unknown-linux-gnu.tar.xz -C $(TOOLCHAIN_DIR).tmp
	rm -rf .toolchain/fetch
	mv $(TOOLCHAIN_DIR).tmp $(TOOLCHAIN_DIR)
	touch $@

# The binary for the packages: the same build as `make build`, linked
# against glibc 2.17. The toolchain is x86_64 only. -w: gcc 4.8 misreads
# go-dcgm's `#pragma GCC diagnostic` pairs and warns about padding in every
# DCGM struct; `make build` compiles the same C with gcc 12's warnings on.
package-bin: toolchain
	@[ "$(GOARCH)" = amd64 ] || { echo "make package: the glibc 2.17 toolchain builds amd64 only, not $(GOARCH)" >&2; exit 1; }
	CGO_ENABLED=1 GOARCH=$(GOARCH) CC=$(abspath $(TOOLCHAIN_CC)) CGO_CFLAGS="$(CGO_CFLAGS) -w" \
	  $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(PKG_BIN) ./cmd/gpuwarden

# What nfpm takes from outside git: the binary above, and man pages and
# completions generated from the command tree, by a build of it with the
# gen-docs command (the gendocs tag; the shipped binary leaves the generator
# out).
package-stage:
	rm -rf $(STAGE)
	mkdir -p $(STAGE)
	$(MAKE) package-bin
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
