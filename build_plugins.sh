#!/usr/bin/env bash
# Builds every plugin source plugin_sources/<name>/<version>/ into
# plugins/<name>_v<version>.so and, as an out-of-process plugin (the same
# source with -tags soplug_exec), into plugins-exec/<name>_v<version>; and
# the loader's test fixtures from testdata/fixtures/ into
# testdata/fixtures/bin/ (<name>.so, and <name>.exec for those with a
# main_exec.go).
#
# Plugins must be built by the same Go toolchain, with the same flags, as the
# runner that loads them: this script uses the plain `go build` the README uses
# for the runner, and any GOFLAGS in the environment apply to both. Each
# version is its own package, so its plugin path (its import path) is unique
# and two versions can be loaded side by side.
#
# A plugin is built under a dotfile name (which the loader and the watcher
# ignore) and renamed into place, so a watching daemon never sees a half-written
# file; a file whose bytes did not change is left alone, so running this twice
# changes nothing.
#
# Usage: ./build_plugins.sh [--examples | --fixtures]   (default: both)
set -euo pipefail
cd "$(dirname "$0")"
export CGO_ENABLED=1
# -trimpath: the package hashes Go compares at load time then do not hold
# the checkout's path, so a runner built in another folder (or by
# `runner plugins build`) loads these plugins. The runner and the tests are
# built with it too (README).
export GOFLAGS="-trimpath $(go env GOFLAGS)" # the environment's and go env -w's GOFLAGS too

what=${1:-all}
case $what in all | --examples | --fixtures) ;; *)
	echo "usage: $0 [--examples | --fixtures]" >&2
	exit 2
	;;
esac

step=""
trap 'echo "build_plugins.sh: FAILED $step" >&2' ERR

# place TMP DEST: move a freshly built TMP to DEST unless DEST has its bytes.
place() {
	if [[ -f $2 ]] && cmp -s "$1" "$2"; then
		rm -f "$1"
		echo "unchanged $2"
	else
		mv -f "$1" "$2"
		echo "built     $2 ($(du -k "$2" | cut -f1) KiB)"
	fi
}

# plugin PKGDIR DEST: build the package in PKGDIR as a plugin at DEST.
plugin() {
	step="building $2 from $1"
	local tmp
	tmp="$(dirname "$2")/.$(basename "$2").tmp"
	go build -buildmode=plugin -o "$tmp" "./$1"
	place "$tmp" "$2"
}

# executable PKGDIR DEST: build the package in PKGDIR as an out-of-process
# plugin at DEST.
executable() {
	step="building $2 from $1"
	local tmp
	tmp="$(dirname "$2")/.$(basename "$2").tmp"
	go build -tags soplug_exec -o "$tmp" "./$1"
	place "$tmp" "$2"
}

if [[ $what != --fixtures ]]; then
	n=0
	for dir in plugin_sources/*/*/; do
		dir=${dir%/}
		name=$(basename "$(dirname "$dir")")
		ver=$(basename "$dir")
		plugin "$dir" "plugins/${name}_v${ver}.so"
		mkdir -p plugins-exec
		executable "$dir" "plugins-exec/${name}_v${ver}"
		n=$((n + 1))
	done
	((n > 0)) || { echo "build_plugins.sh: no plugin sources under plugin_sources/<name>/<version>/" >&2; exit 1; }
fi

if [[ $what != --examples ]]; then
	out=testdata/fixtures/bin
	mkdir -p "$out"
	while IFS= read -r main; do
		dir=$(dirname "$main")
		rel=${dir#testdata/fixtures/}
		plugin "$dir" "$out/${rel//\//-}.so"
		if [[ -f $dir/main_exec.go ]]; then
			executable "$dir" "$out/${rel//\//-}.exec"
		fi
	done < <(find testdata/fixtures -name main.go -not -path '*/internal/*' -not -path '*/bin/*' -not -path '*/otherdep/*' | sort)

	# A plugin in a module of its own that pins another version of a module
	# the runner links (github.com/hashicorp/go-version).
	step="building $out/otherdep.so"
	(cd testdata/fixtures/otherdep && GOWORK=off GOFLAGS="${GOFLAGS:-} -mod=mod" \
		go build -buildmode=plugin -o "$OLDPWD/$out/.otherdep.so.tmp" .)
	place "$out/.otherdep.so.tmp" "$out/otherdep.so"
	step="building $out/otherdep.exec"
	(cd testdata/fixtures/otherdep && GOWORK=off GOFLAGS="${GOFLAGS:-} -mod=mod" \
		go build -tags soplug_exec -o "$OLDPWD/$out/.otherdep.exec.tmp" .)
	place "$out/.otherdep.exec.tmp" "$out/otherdep.exec"

	# A Go executable built as a position-independent executable: ET_DYN
	# like a plugin, but not one.
	step="building $out/executable.so"
	go build -buildmode=pie -o "$out/.executable.so.tmp" ./testdata/fixtures/good/1.0.0
	place "$out/.executable.so.tmp" "$out/executable.so"

	# A C shared library: loads with dlopen, holds no Go.
	step="building $out/clib.so"
	${CC:-cc} -shared -fPIC -o "$out/.clib.so.tmp" testdata/fixtures/clib.c
	place "$out/.clib.so.tmp" "$out/clib.so"

	# A plugin built against another version of the contract package, as if
	# from an older soplug release: a copy of contract/ with one more
	# exported function, in a module of its own (built with -trimpath like
	# everything here, so only that package differs from the runner's).
	step="building $out/othercontract.so"
	tmp=$out/.othercontract
	rm -rf "$tmp"
	mkdir -p "$tmp/soplug/contract" "$tmp/fx"
	for f in contract/*.go; do [[ $f == *_test.go ]] || cp "$f" "$tmp/soplug/contract/"; done
	printf '\n// FixtureSkew makes this copy of the package differ.\nfunc FixtureSkew() {}\n' >>"$tmp/soplug/contract/contract.go"
	printf 'module github.com/soplug/soplug\n\ngo 1.26\n' >"$tmp/soplug/go.mod"
	printf 'module example.com/othercontract\n\ngo 1.26\n\nrequire github.com/soplug/soplug v0.0.0\n\nreplace github.com/soplug/soplug => ../soplug\n' >"$tmp/fx/go.mod"
	cat >"$tmp/fx/main.go" <<'GO'
package main

import (
	"context"

	"github.com/soplug/soplug/contract"
)

type t struct{}

func (t) Version() string    { return "9.0.0" }
func (t) IsAcceptable() bool { return true }
func (t) Transform(_ context.Context, b []byte, _ contract.Config) ([]byte, error) {
	return b, nil
}

func Transformer() contract.Transformer { return t{} }

func main() {}
GO
	(cd "$tmp/fx" && GOWORK=off GOFLAGS="${GOFLAGS:-} -mod=mod" go build -buildmode=plugin -o "$OLDPWD/$out/.othercontract.so.tmp" .)
	place "$out/.othercontract.so.tmp" "$out/othercontract.so"

	# A plugin built by another Go release, fetched as a toolchain module
	# from the Go module proxy. Optional: the tests that use it skip when it
	# could not be built.
	step="building $out/othergo.so"
	othergo=go1.25.5
	tmp=$out/.othergo
	rm -rf "$tmp"
	mkdir -p "$tmp/soplug/contract" "$tmp/fx"
	for f in contract/*.go; do [[ $f == *_test.go ]] || cp "$f" "$tmp/soplug/contract/"; done
	printf 'module github.com/soplug/soplug\n\ngo 1.25\n' >"$tmp/soplug/go.mod"
	sed 's/^go 1.26$/go 1.25/' "$out/.othercontract/fx/go.mod" | sed 's/othercontract/othergo/' >"$tmp/fx/go.mod"
	cp "$out/.othercontract/fx/main.go" "$tmp/fx/main.go"
	if (cd "$tmp/fx" && GOWORK=off GOTOOLCHAIN=$othergo GOFLAGS="${GOFLAGS:-} -mod=mod" \
		go build -buildmode=plugin -o "$OLDPWD/$out/.othergo.so.tmp" . 2>"$OLDPWD/$out/.othergo.log"); then
		place "$out/.othergo.so.tmp" "$out/othergo.so"
	else
		echo "skipped   $out/othergo.so: the $othergo toolchain could not be used ($(tail -n1 "$out/.othergo.log"))"
	fi
fi
