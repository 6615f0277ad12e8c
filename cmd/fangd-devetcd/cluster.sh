#!/bin/sh
# make cluster: an embedded etcd and three fangd nodes in cluster mode on
# loopback, each with its own home under $CLUSTER_DIR. Ctrl-C stops all.
# CLUSTER_CONFIG=FILE is copied to every node's home as its config.toml at
# each start: a fake Bot API or LLM on loopback needs [network_policy]
# allow_hosts and [providers.*] there (docs/cluster.md, "Try it").
set -eu
BIN=${BIN:-bin/fangd}
ETCD_BIN=${ETCD_BIN:-bin/fangd-devetcd}
DIR=${CLUSTER_DIR:-$(mktemp -d /tmp/fangd-cluster.XXXXXX)}
ETCD=${CLUSTER_ETCD:-127.0.0.1:23790}
mkdir -p "$DIR"
# One vault key for all nodes: cluster channels keep their secrets in etcd
# sealed with it (docs/cluster.md). Kept beside the homes for a restart.
if [ -z "${FANGD_VAULT_KEY:-}" ]; then
	[ -s "$DIR/vault.key" ] || (umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$DIR/vault.key")
	FANGD_VAULT_KEY=$(cat "$DIR/vault.key")
fi
export FANGD_VAULT_KEY
if [ -n "${CLUSTER_CONFIG:-}" ] && [ ! -r "$CLUSTER_CONFIG" ]; then
	echo "CLUSTER_CONFIG=$CLUSTER_CONFIG is not a readable file" >&2
	exit 2
fi
etcd_pid=""
pids=""
# The nodes stop first, while etcd still answers: a node's graceful stop
# leaves the cluster and revokes its leases in etcd (about 2 s); with etcd
# gone first each node waits out its etcd timeouts instead (about 10 s).
# Ctrl-C reaches every process of the group, so etcd runs with -term-only
# (it ignores SIGINT) and is stopped here, after the nodes.
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	for p in $pids; do wait "$p" 2>/dev/null || true; done
	[ -z "$etcd_pid" ] || { kill "$etcd_pid" 2>/dev/null || true; wait "$etcd_pid" 2>/dev/null || true; }
}
trap cleanup INT TERM EXIT
"$ETCD_BIN" -term-only -listen "$ETCD" -dir "$DIR/etcd" >"$DIR/etcd.log" 2>&1 &
etcd_pid=$!
sleep 1
for i in 1 2 3; do
	port=$((4600 + i))
	mkdir -p "$DIR/node$i"
	[ -z "${CLUSTER_CONFIG:-}" ] || cp "$CLUSTER_CONFIG" "$DIR/node$i/config.toml"
	"$BIN" serve --home "$DIR/node$i" --listen "127.0.0.1:$port" \
		--cluster "etcd://$ETCD" --cluster-name local --node-name "node$i" >"$DIR/node$i.log" 2>&1 &
	pids="$pids $!"
done
for i in 1 2 3; do
	port=$((4600 + i))
	n=0
	until curl -fs "http://127.0.0.1:$port/api/health" >/dev/null 2>&1; do
		n=$((n + 1)); [ $n -lt 150 ] || { echo "node$i did not start, see $DIR/node$i.log"; exit 1; }
		sleep 0.2
	done
done
echo "etcd:  etcd://$ETCD (embedded, data in $DIR/etcd)"
for i in 1 2 3; do echo "node$i: http://127.0.0.1:$((4600 + i))  (home $DIR/node$i, log $DIR/node$i.log)"; done
echo "members: curl http://127.0.0.1:4601/api/cluster   -- Ctrl-C stops everything"
wait
