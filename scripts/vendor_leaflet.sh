#!/usr/bin/env bash
# Vendor Leaflet into the package (src/atm_risk/api/static/vendor/leaflet-VERSION/), pinned
# by version and by the npm registry's sha512 integrity hash. The map page never loads
# anything from a CDN: these files are shipped with the package and served by the app.
#
# Usage: scripts/vendor_leaflet.sh        (needs npm, tar, sha512sum/openssl, base64)
# Redoing it gives the same files; a changed tarball (integrity mismatch) stops the script.
set -euo pipefail

VERSION="1.9.4"
# npm view leaflet@1.9.4 dist.integrity -- pinned here so that a tampered or re-published
# tarball is refused, whatever the registry says today.
INTEGRITY="sha512-nxS1ynzJOmOlHp+iL3FyWqK89GtNL8U8rvlMOsQdTTssxZwCXh8N2NB3GDQOL+YR3XnWyZAxwQixURb+FA74PA=="

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/src/atm_risk/api/static/vendor/leaflet-$VERSION"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

published="$(npm view "leaflet@$VERSION" dist.integrity)"
if [[ "$published" != "$INTEGRITY" ]]; then
  echo "registry integrity $published differs from the pinned $INTEGRITY" >&2
  exit 1
fi

(cd "$WORK" && npm pack --silent "leaflet@$VERSION" >/dev/null)
tarball="$WORK/leaflet-$VERSION.tgz"
actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
if [[ "$actual" != "$INTEGRITY" ]]; then
  echo "leaflet-$VERSION.tgz: sha512 $actual, expected $INTEGRITY" >&2
  exit 1
fi
echo "leaflet-$VERSION.tgz: integrity verified ($INTEGRITY)"

tar -xzf "$tarball" -C "$WORK"
pkg="$WORK/package"
license="$(node -p "require('$pkg/package.json').license")"
if [[ "$license" != "BSD-2-Clause" ]]; then
  echo "unexpected licence $license" >&2
  exit 1
fi

rm -rf "$DEST"
mkdir -p "$DEST/images"
cp "$pkg/dist/leaflet.js" "$pkg/dist/leaflet.css" "$DEST/"
cp "$pkg"/dist/images/* "$DEST/images/"
cp "$pkg/LICENSE" "$DEST/LICENSE"
chmod 0644 "$DEST"/*.js "$DEST"/*.css "$DEST/LICENSE" "$DEST"/images/*

cat >"$DEST/VENDOR.md" <<EOF
# Leaflet $VERSION (vendored)

| | |
| --- | --- |
| package | \`leaflet@$VERSION\` from the npm registry |
| source | https://registry.npmjs.org/leaflet/-/leaflet-$VERSION.tgz (project: https://leafletjs.com, https://github.com/Leaflet/Leaflet) |
| integrity | \`$INTEGRITY\` (the tarball's sha512, as \`npm view leaflet@$VERSION dist.integrity\` reports; checked before copying) |
| licence | BSD-2-Clause, see \`LICENSE\` beside this file |
| files | \`dist/leaflet.js\`, \`dist/leaflet.css\`, \`dist/images/*\`, \`LICENSE\`, unchanged |

Shipped with the package and served by the app under \`/static/vendor/leaflet-$VERSION/\`, so
the map page works without internet and makes no request outside the server it came from.
Redo with \`scripts/vendor_leaflet.sh\` (which refuses a tarball whose hash differs).

## sha256 of the vendored files

\`\`\`
$(cd "$DEST" && find . -type f ! -name VENDOR.md | LC_ALL=C sort | xargs sha256sum)
\`\`\`
EOF
echo "vendored into ${DEST#"$ROOT"/}:"
(cd "$DEST" && find . -type f | LC_ALL=C sort)
