#!/bin/sh
# make cluster: an embedded etcd and three fangd nodes in cluster mode on
# loopback, each with its own home under $CLUSTER_DIR. Ctrl-C stops all.
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
pids=""
cleanup() { for p in $pids; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup INT TERM EXIT
"$ETCD_BIN" -listen "$ETCD" -dir "$DIR/etcd" >"$DIR/etcd.log" 2>&1 &
pids="$pids $!"
sleep 1
for i in 1 2 3; do
	port=$((4600 + i))
	mkdir -p "$DIR/node$i"
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
