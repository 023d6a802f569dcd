#!/usr/bin/env bash
# Builds the Ollama engine that edges supervise, from the version pinned as
# a tool in go.mod, into bin/ollama. A no-op when bin/ollama was already
# built from the same version with the same CPU target.
#
# llama.cpp's C++ warnings are silenced (-w): they are upstream's, and
# would bury a build error in CI logs.
#
# OLLAMA_MARCH picks the CPU target handed to the C/C++ compiler:
#   auto       (default) x86-64-v3 when this host has AVX2, FMA and F16C,
#              else x86-64;
#   x86-64-v3  AVX2 machines (most servers since 2015): long prompts 4-5x
#              faster than SSE2, and the choice for a binary copied to a
#              fleet;
#   x86-64     SSE2 only: runs anywhere;
#   native     every feature of this host. Not the default: on CPUs with
#              AMX it fails to link, because the cgo build does not compile
#              ggml's AMX backend that -march=native switches on.
set -euo pipefail
cd "$(dirname "$0")/../.."

GO=${GO:-go}
BIN=${BIN:-bin}
MARCH=${OLLAMA_MARCH:-auto}
if [ "$MARCH" = auto ]; then
	MARCH=x86-64
	if [ "$(uname -m)" != x86_64 ]; then
		MARCH=default # the compiler's own target on other architectures
	elif grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo && grep -qw f16c /proc/cpuinfo; then
		MARCH=x86-64-v3
	fi
fi
version=$($GO list -m -f '{{.Version}}' github.com/ollama/ollama)
stamp="$BIN/.ollama.stamp"
want="$version march=$MARCH"
if [ -x "$BIN/ollama" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
	exit 0
fi

# Ollama's cgo code needs three headers that Go module zips leave out. Two
# come from Debian packages, one from a Go module that ships it.
pkgs=()
command -v g++ >/dev/null || pkgs+=(build-essential)
[ -f /usr/include/stb/stb_image.h ] || pkgs+=(libstb-dev)
[ -f /usr/include/nlohmann/json.hpp ] || pkgs+=(nlohmann-json3-dev)
if ((${#pkgs[@]})); then
	if [ "$(id -u)" != 0 ]; then
		echo "make ollama: missing packages; run: sudo apt-get install -y ${pkgs[*]}" >&2
		exit 1
	fi
	echo "make ollama: installing ${pkgs[*]}" >&2
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}"
fi

# Pinned here, not through go.mod: nothing imports malgo, so a tidy would
# drop it from go.mod.
MALGO=github.com/gen2brain/malgo@v0.11.24
malgo=$($GO mod download -json "$MALGO" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [ -z "$malgo" ] || [ ! -f "$malgo/miniaudio.h" ]; then
	echo "make ollama: $MALGO has no miniaudio.h (download failed?)" >&2
	exit 1
fi
inc="$BIN/.ollama-include"
mkdir -p "$inc/miniaudio"
ln -sf "$malgo/miniaudio.h" "$inc/miniaudio/miniaudio.h"
inc=$(cd "$inc" && pwd)

march=""
[ "$MARCH" = default ] || march="-march=$MARCH"
echo "make ollama: building ollama $version (march=$MARCH); a cold build takes several minutes" >&2
mkdir -p "$BIN"
v=${version#v}
CGO_ENABLED=1 \
CGO_CPPFLAGS="-I$inc ${CGO_CPPFLAGS:-}" \
CGO_CFLAGS="-O3 -w $march ${CGO_CFLAGS:-}" \
CGO_CXXFLAGS="-O3 -w $march ${CGO_CXXFLAGS:-}" \
	$GO build -trimpath \
	-ldflags "-s -w -X=github.com/ollama/ollama/version.Version=$v -X=github.com/ollama/ollama/server.mode=release" \
	-o "$BIN/ollama.tmp" github.com/ollama/ollama
mv "$BIN/ollama.tmp" "$BIN/ollama"
echo "$want" >"$stamp"
"$BIN/ollama" --version 2>/dev/null | tail -1 >&2 || true
