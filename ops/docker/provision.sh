#!/bin/sh
# Provisions the compose demo (compose.yaml) into the shared /provision
# volume, as an operator would with meridianctl:
#   provision.sh secrets   before the control plane starts: the KEK and a
#                          CA with certificates for the control nodes'
#                          API, Raft and NATS (all TLS, as off-loopback
#                          listeners must be);
#   provision.sh fleet     once it runs: applies fleet.yaml, then writes
#                          each edge's config with its one-time join
#                          token and the pinned table key.
# Both steps are idempotent: a second `docker compose up` keeps what the
# first made, and an edge that joined keeps its credentials.
set -eu
P=/provision
CONTROLS="control-1 control-2 control-3"

secrets() {
	[ -f "$P/kek.hex" ] || meridianctl kek new "$P/kek.hex"
	[ -f "$P/tls/ca.crt" ] || meridianctl tls ca --dir "$P/tls" --name "Meridian compose demo"
	for n in $CONTROLS; do
		[ -f "$P/tls/$n.crt" ] || meridianctl tls cert --ca-dir "$P/tls" --node "$n" --host "$n" --out "$P/tls" --control
	done
}

fleet() {
	export MERIDIAN_CONTROL_ADDR=https://control-1:7400,https://control-2:7400,https://control-3:7400
	export MERIDIAN_CONTROL_CACERT="$P/tls/ca.crt"
	# The first apply may meet an election; retry for a minute.
	i=0
	until meridianctl apply -f /etc/meridian/fleet.yaml; do
		i=$((i + 1))
		[ "$i" -lt 30 ] || { echo "provision: the control plane did not accept the fleet" >&2; exit 1; }
		sleep 2
	done
	key=$(meridianctl table-key | grep -v '^#' | sed 's/^/  /')
	mkdir -p "$P/edges"
	for site in "eu-west 172.28.0.21" "us-east 172.28.0.22" "ap-south 172.28.0.23"; do
		region=${site% *} ip=${site#* } id="${site% *}-1"
		[ -f "$P/edges/$id.yaml" ] && continue
		token=$(meridianctl node token "$id" --region "$region" --ttl 1h)
		seeds=$(for o in 172.28.0.21 172.28.0.22 172.28.0.23; do [ "$o" = "$ip" ] || printf '"%s:7946", ' "$o"; done)
		cat >"$P/edges/$id.yaml.tmp" <<YAML
# Written by ops/docker/provision.sh for the compose demo.
node_id: $id
region: $region
listen: ":8080"
log_format: text
control:
  nats_urls: ["tls://control-1:4222", "tls://control-2:4222", "tls://control-3:4222"]
  tls_ca_file: $P/tls/ca.crt
  api_url: https://control-1:7400
  api_ca_file: $P/tls/ca.crt
  join_token: $token
  data_dir: /var/lib/meridian/identity
  table_cache: /var/lib/meridian/table.pb
$key
link:
  enabled: true
gossip:
  enabled: true
  advertise: $ip
  seeds: [${seeds%, }]
  cluster: compose-demo
  keys_env: MERIDIAN_GOSSIP_KEYS
YAML
		mv "$P/edges/$id.yaml.tmp" "$P/edges/$id.yaml"
	done
}

case "${1:-}" in
secrets) secrets ;;
fleet) fleet ;;
*)
	echo "usage: provision.sh secrets|fleet" >&2
	exit 2
	;;
esac
