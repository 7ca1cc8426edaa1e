#!/usr/bin/env bash
# Install what modelfs needs to build and test on Debian 12: compilers and
# libraries (gRPC's C core, protobuf-c and sd-bus for the CSI plugin; nginx, a real web
# server for the http:// tests; python3-grpcio, the CSI test's client) from apt, and
# from npm s3rver 3 (the local S3 server of the tests), ali-oss 6 (Alibaba's
# OSS SDK, which checks the fake OSS server) and @huggingface/hub 2 (which
# checks the fake Hub) into /opt/s3rver, /opt/ali-oss and /opt/hf-hub. Safe to
# run again: it installs only what is missing.
set -euo pipefail

pkgs=(build-essential cmake pkg-config fuse3 libfuse3-dev libcurl4-openssl-dev libssl-dev
      liblmdb-dev lmdb-utils libzstd-dev zstd python3 curl openssl attr psmisc procps util-linux
      iproute2 groff-base libjansson-dev nginx-light libmicrohttpd-dev prometheus
      libgrpc-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler python3-grpcio
      python3-protobuf yamllint binutils libsystemd-dev python3-dbus python3-gi dbus systemd)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
	echo "deps: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq "${missing[@]}" >/dev/null
fi

S3RVER_HOME=${S3RVER_HOME:-/opt/s3rver}
if [ ! -x "$S3RVER_HOME/node_modules/.bin/s3rver" ]; then
	echo "deps: installing s3rver@3 into $S3RVER_HOME" >&2
	mkdir -p "$S3RVER_HOME"
	npm install --prefix "$S3RVER_HOME" --no-audit --no-fund --silent s3rver@3 >/dev/null
fi
# Alibaba's own OSS SDK, to check the fake OSS server's signatures against
ALIOSS_HOME=${ALIOSS_HOME:-/opt/ali-oss}
if [ ! -f "$ALIOSS_HOME/node_modules/ali-oss/lib/common/signUtils.js" ]; then
	echo "deps: installing ali-oss@6 into $ALIOSS_HOME" >&2
	mkdir -p "$ALIOSS_HOME"
	npm install --prefix "$ALIOSS_HOME" --no-audit --no-fund --silent ali-oss@6 >/dev/null
fi
# Hugging Face's own Hub client, to check the fake Hub server (hubfake.py) against
HFHUB_HOME=${HFHUB_HOME:-/opt/hf-hub}
if [ ! -f "$HFHUB_HOME/node_modules/@huggingface/hub/dist/index.js" ]; then
	echo "deps: installing @huggingface/hub@2 into $HFHUB_HOME" >&2
	mkdir -p "$HFHUB_HOME"
	npm install --prefix "$HFHUB_HOME" --no-audit --no-fund --silent @huggingface/hub@2 >/dev/null
fi
[ -e /dev/fuse ] || { echo "deps: /dev/fuse is missing: FUSE mounts will fail" >&2; exit 1; }
