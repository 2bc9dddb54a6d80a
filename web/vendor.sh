#!/usr/bin/env bash
# Install the pinned front-end libraries (package-lock.json) and copy the files the page loads, with
# their licences, into the Python package. The copies are committed: installing vmhost needs no npm.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
dest=../vmhost/daemon/static/vendor
mkdir -p "$dest"
cp node_modules/@xterm/xterm/lib/xterm.js node_modules/@xterm/xterm/css/xterm.css "$dest/"
cp node_modules/@xterm/xterm/LICENSE "$dest/LICENSE.xterm"
cp node_modules/@xterm/addon-fit/lib/addon-fit.js "$dest/"
cp node_modules/@xterm/addon-fit/LICENSE "$dest/LICENSE.addon-fit"
echo "copied into $dest:"; ls -l "$dest"
