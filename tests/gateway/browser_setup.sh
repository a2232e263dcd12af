#!/usr/bin/env bash
# Installs the browser test's pinned playwright-core (package-lock.json)
# into DIR with `npm ci`, once: a DIR that already holds the locked version
# is left as it is.
#
#   browser_setup.sh DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=$1
want=$(node -e 'const l=require(process.argv[1]);console.log(l.packages["node_modules/playwright-core"].version)' \
       "$here/package-lock.json")
have=$(node -e 'try{console.log(require(process.argv[1]).version)}catch(e){console.log("none")}' \
       "$dir/node_modules/playwright-core/package.json")
if [ "$have" = "$want" ]; then
    echo "browser_setup: playwright-core $want already in $dir"
    exit 0
fi
mkdir -p "$dir"
cp "$here/package.json" "$here/package-lock.json" "$dir/"
cd "$dir"
# Only the library: playwright-core downloads no browser; the test runs
# Debian's /usr/bin/chromium.
npm ci --no-audit --no-fund --ignore-scripts
echo "browser_setup: playwright-core $want installed in $dir"
