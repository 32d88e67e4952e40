#!/usr/bin/env bash
# Build cadence-<version>-x64.msi from a Windows PyInstaller build folder (dist/cadence/ made by
# installers/pyinstaller/cadence.spec on Windows: cadence.exe, cadencew.exe, _internal/).
#
# Linux/macOS: wixl and wixl-heat from msitools (Debian: apt-get install wixl).
#   installers/windows/build-msi.sh dist/cadence [out.msi]
# Windows, WiX 3.x (same source):
#   heat dir dist\cadence -cg CadenceFiles -dr INSTALLFOLDER -srd -sreg -gg -var var.SourceDir -out Files.wxs
#   candle -arch x64 -dSourceDir=dist\cadence -dVersion=X.Y.Z -dWin64=yes Product.wxs Files.wxs
#   light -o cadence.msi Product.wixobj Files.wixobj
# Sign the MSI (and the exes before harvesting) with signtool for SmartScreen and Intune.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
src="${1:?usage: build-msi.sh DIST_FOLDER [OUT.msi]}"
src="$(cd "$src" && pwd)"
for exe in cadence.exe cadencew.exe; do
  [ -f "$src/$exe" ] || { echo "build-msi: $src/$exe missing (PyInstaller build on Windows)" >&2; exit 1; }
done
command -v wixl >/dev/null || { echo "build-msi: wixl not found (apt-get install wixl)" >&2; exit 1; }
version="$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$ROOT/pyproject.toml")"
out="${2:-$ROOT/dist/cadence-$version-x64.msi}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$src" && find . -type f | sort) \
  | wixl-heat --prefix ./ --directory-ref INSTALLFOLDER --component-group CadenceFiles \
      --var var.SourceDir --win64 > "$work/Files.wxs"
mkdir -p "$(dirname "$out")"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
# wixl resolves File sources relative to the working directory
(cd "$src" && wixl --arch x64 -D SourceDir=. -D Version="$version" -D Win64=yes \
  -o "$out" "$HERE/Product.wxs" "$work/Files.wxs" 2> >(grep -v "has no property named 'Platform'" >&2))
echo "build-msi: $out"
