#!/usr/bin/env bash
# A regulator's walkthrough: check a directory of Evident packs with nothing
# but the ledger's public key, its OpenPGP certificate, evident-verify and gpg.
#
#   examples/regulator/verify.sh PACKS_DIR LEDGER_VERIFIER_KEY LEDGER_CERT.asc
#
# No network, no database: everything below reads local files.
set -euo pipefail
PACKS="$1"; KEY="$2"; CERT="$3"
VERIFY="${EVIDENT_VERIFY:-evident-verify}"

echo "== 1. The OpenPGP signature of every manifest, with GnuPG alone"
GNUPGHOME="$(mktemp -d)"; export GNUPGHOME
trap 'rm -rf "$GNUPGHOME"' EXIT
chmod 700 "$GNUPGHOME"
gpg --batch --quiet --import "$CERT"
for m in "$PACKS"/*/manifest.json; do
    gpg --batch --verify "$m.asc" "$m" 2>&1 | grep -E 'Good signature|BAD' | sed "s|^|$(dirname "$m" | xargs basename): |"
done

echo "== 2. One pack on its own (what it proves, and what it cannot)"
FIRST="$(ls -d "$PACKS"/????-??-?? | sort | head -1)"
"$VERIFY" pack "$FIRST" --key "$KEY" --pgp-cert "$CERT"

echo "== 3. The whole chain: every pack, every link, no gap, no fork, reports re-derived"
"$VERIFY" chain "$PACKS" --key "$KEY" --pgp-cert "$CERT"

echo "== 4. The same as JSON, for your own tooling (schemas/cli/verify.chain.json)"
"$VERIFY" --json chain "$PACKS" --key "$KEY" | head -c 300; echo " ..."
