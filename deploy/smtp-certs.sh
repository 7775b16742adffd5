#!/bin/sh
# One-shot: a private CA and a certificate for the SMTP relay's host name, made once.
#
#   atm-risk-smtp-certs DIR HOSTNAME
#
# Writes DIR/ca.pem (what the app trusts: ATM_RISK_ALERTS__SMTP__CA_FILE), DIR/smtp.pem and
# DIR/smtp-key.pem (the relay's certificate and key). Does nothing when all three exist.
# The CA's own key is thrown away: this CA can never sign anything else.
set -eu

dir=${1:?usage: atm-risk-smtp-certs DIR HOSTNAME}
host=${2:?usage: atm-risk-smtp-certs DIR HOSTNAME}

if [ -s "$dir/ca.pem" ] && [ -s "$dir/smtp.pem" ] && [ -s "$dir/smtp-key.pem" ]; then
  echo "SMTP certificate for $host exists in $dir; nothing to do"
  exit 0
fi

umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
  -subj "/CN=atm-risk private SMTP CA" \
  -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout "$work/ca-key.pem" -out "$work/ca.pem" 2>/dev/null

openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj "/CN=$host" -keyout "$work/smtp-key.pem" -out "$work/smtp.csr" 2>/dev/null

cat > "$work/leaf.cnf" <<CNF
subjectAltName=DNS:$host
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
CNF

openssl x509 -req -in "$work/smtp.csr" -CA "$work/ca.pem" -CAkey "$work/ca-key.pem" \
  -CAcreateserial -days 825 -extfile "$work/leaf.cnf" -out "$work/smtp.pem" 2>/dev/null

chmod 644 "$work/ca.pem" "$work/smtp.pem"
chmod 600 "$work/smtp-key.pem"
mkdir -p "$dir"
# the key last: the "all three exist" check above never sees a half-written set
mv "$work/ca.pem" "$work/smtp.pem" "$dir/"
mv "$work/smtp-key.pem" "$dir/"
echo "SMTP certificate for $host written to $dir (CA: $dir/ca.pem)"
