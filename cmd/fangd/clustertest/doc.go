// Package clustertest holds the black-box tests of cluster mode: a real
// (embedded) etcd and several real fangd processes on loopback. They are
// behind the "cluster" build tag and run by `make test-cluster` without
// the race detector: protoactor-go's cluster package is racy upstream
// (its own `go test -race ./cluster/` reports about a hundred races), so
// a fangd binary built with -race and running in cluster mode reports
// upstream's races, not fangd's. Everything of fangd's own, the cluster
// package's config and HTTP code included, stays under -race in
// `make test`.
package clustertest
