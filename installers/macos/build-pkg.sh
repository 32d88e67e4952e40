#!/bin/bash
# Build Cadence-<version>.pkg (macOS, Xcode command line tools) from the PyInstaller app bundle.
#
#   pyinstaller installers/pyinstaller/cadence.spec        # -> dist/Cadence.app
#   DEVELOPER_ID_APP="Developer ID Application: Org (TEAMID)" \
#   DEVELOPER_ID_INSTALLER="Developer ID Installer: Org (TEAMID)" \
#   NOTARY_PROFILE=cadence installers/macos/build-pkg.sh dist/Cadence.app
#
# Steps (each a documented Apple tool):
#   codesign  --force --deep --options runtime --timestamp --sign "$DEVELOPER_ID_APP" Cadence.app
#             (hardened runtime; the bundle id org.cadence.agent and the team id are what the
#             PPPC and login-item payloads in cadence.mobileconfig match)
#   pkgbuild  --root <payload> --scripts scripts --identifier org.cadence.agent.pkg
#             --version <v> --install-location / component.pkg
#             payload: /Applications/Cadence.app, /Library/LaunchAgents/org.cadence.agent.plist
#   productbuild --package component.pkg [--sign "$DEVELOPER_ID_INSTALLER"] Cadence-<v>.pkg
#   xcrun notarytool submit Cadence-<v>.pkg --keychain-profile "$NOTARY_PROFILE" --wait
#   xcrun stapler staple Cadence-<v>.pkg
# Without the signing variables it builds an unsigned pkg (for testing only: TCC grants and
# managed login items need a stable code signature).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
app="${1:?usage: build-pkg.sh path/to/Cadence.app}"
version="$(/usr/bin/python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$ROOT/pyproject.toml" 2>/dev/null \
  || sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml")"
out="$ROOT/dist/Cadence-$version.pkg"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/root/Applications" "$work/root/Library/LaunchAgents"
ditto "$app" "$work/root/Applications/Cadence.app"
install -m 0644 "$HERE/org.cadence.agent.plist" "$work/root/Library/LaunchAgents/"
plutil -lint "$work/root/Library/LaunchAgents/org.cadence.agent.plist"
if [ -n "${DEVELOPER_ID_APP:-}" ]; then
  codesign --force --deep --options runtime --timestamp --sign "$DEVELOPER_ID_APP" \
    "$work/root/Applications/Cadence.app"
  codesign --verify --strict --verbose=2 "$work/root/Applications/Cadence.app"
fi
chmod 0755 "$HERE/scripts/preinstall" "$HERE/scripts/postinstall"
pkgbuild --root "$work/root" --scripts "$HERE/scripts" --identifier org.cadence.agent.pkg \
  --version "$version" --install-location / --ownership recommended "$work/component.pkg"
sign=()
[ -n "${DEVELOPER_ID_INSTALLER:-}" ] && sign=(--sign "$DEVELOPER_ID_INSTALLER")
mkdir -p "$(dirname "$out")"
productbuild --package "$work/component.pkg" --identifier org.cadence.agent.pkg \
  --version "$version" "${sign[@]}" "$out"
if [ -n "${NOTARY_PROFILE:-}" ]; then
  xcrun notarytool submit "$out" --keychain-profile "$NOTARY_PROFILE" --wait
  xcrun stapler staple "$out"
fi
echo "build-pkg: $out"
