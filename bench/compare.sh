#!/bin/sh
# The key benchmarks on the current tree and on a git revision, side by
# side, with benchstat's ratios (new against REV):
#
#   bench/compare.sh REV        (make bench-compare REV=main)
#   COUNT=6 BENCHTIME=1s BENCH_SET="./agent:^BenchmarkScrape$ ..."
#   BENCH_OUT=DIR keeps the raw results (REV.txt, new.txt) in DIR
#
# Each benchmark binary is built once per tree, and the runs alternate
# between the trees (COUNT times), so a change in the load of a shared
# machine falls on both alike. A benchmark the revision lacks is listed
# without a ratio.
set -eu
rev=${1:?usage: bench/compare.sh REV}
count=${COUNT:-6}
benchtime=${BENCHTIME:-1s}
set_default='./agent:^(BenchmarkScrape|BenchmarkScrapeEncoding|BenchmarkRenderSnapshot|BenchmarkSampleRound)$
./collectors/kmsg:^(BenchmarkDevKmsgReaderVsRaw|BenchmarkClassifyBenignLines)$'
benchset=${BENCH_SET:-$set_default}

here=$(git rev-parse --show-toplevel)
base=$(git rev-parse --verify "$rev^{commit}")
work=$(mktemp -d)
trap 'git -C "$here" worktree remove --force "$work/base" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
git -C "$here" worktree add --detach "$work/base" "$base" >/dev/null 2>&1
echo "bench-compare: $(git -C "$here" describe --always --dirty) against $rev ($(git -C "$here" rev-parse --short "$base")), $count runs of $benchtime" >&2

# build TREE NAME builds each package's test binary of TREE as NAME-<n>.test.
build() {
	n=0
	echo "$benchset" | while read -r entry; do
		[ -n "$entry" ] || continue
		n=$((n + 1))
		pkg=${entry%%:*}
		(cd "$1" && go test -c -o "$work/$2-$n.test" "$pkg") || echo "bench-compare: $pkg does not build in $2" >&2
	done
}
build "$here" new
build "$work/base" old

i=0
while [ "$i" -lt "$count" ]; do
	i=$((i + 1))
	for side in old new; do
		tree=$here
		[ "$side" = old ] && tree=$work/base
		n=0
		echo "$benchset" | while read -r entry; do
			[ -n "$entry" ] || continue
			n=$((n + 1))
			pkg=${entry%%:*}
			re=${entry#*:}
			bin=$work/$side-$n.test
			[ -x "$bin" ] || continue
			# Tests find their testdata from the package's directory.
			(cd "$tree/$pkg" && "$bin" -test.run '^$' -test.bench "$re" -test.benchmem \
				-test.benchtime "$benchtime" -test.count 1) >>"$work/$side.txt" 2>/dev/null || true
		done
	done
	echo "bench-compare: run $i of $count" >&2
done
cd "$here"
if [ -n "${BENCH_OUT:-}" ]; then
	mkdir -p "$BENCH_OUT"
	cp "$work/old.txt" "$BENCH_OUT/$(echo "$rev" | tr / _).txt"
	cp "$work/new.txt" "$BENCH_OUT/new.txt"
fi
go tool benchstat "$rev=$work/old.txt" "new=$work/new.txt"
