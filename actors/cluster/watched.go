package cluster

import (
	"context"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// watched is one etcd prefix kept in memory: filled by one Get, kept
// current by a watch from the Get's revision, and re-established a second
// after any failure. While the watch is not running (etcd unreachable, a
// compaction) the copy is not ready and callers read etcd instead, so a
// cut-off node never answers from a stale copy it cannot refresh. Used
// for the node records (records.go) and the agent directory (agents.go):
// both are read on every forwarded request and change rarely.
type watched[T any] struct {
	prefix string
	// decode turns a stored value into T; false drops the key.
	decode func(key string, val []byte) (T, bool)

	mu    sync.Mutex
	items map[string]T // by etcd key
	ready bool
}

func newWatched[T any](prefix string, decode func(key string, val []byte) (T, bool)) *watched[T] {
	return &watched[T]{prefix: prefix, decode: decode}
}

// run keeps the copy until ctx ends.
func (w *watched[T]) run(ctx context.Context, cli *clientv3.Client) {
	for ctx.Err() == nil {
		w.once(ctx, cli)
		w.mu.Lock()
		w.items, w.ready = nil, false
		w.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (w *watched[T]) once(parent context.Context, cli *clientv3.Client) {
	// Require a leader: a node cut off from the etcd quorum gets an error
	// instead of a watch that silently delivers nothing.
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(parent))
	defer cancel()
	gctx, gcancel := context.WithTimeout(ctx, 5*time.Second)
	resp, err := cli.Get(gctx, w.prefix, clientv3.WithPrefix())
	gcancel()
	if err != nil {
		return
	}
	items := map[string]T{}
	for _, kv := range resp.Kvs {
		if v, ok := w.decode(string(kv.Key), kv.Value); ok {
			items[string(kv.Key)] = v
		}
	}
	wch := cli.Watch(ctx, w.prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	w.mu.Lock()
	w.items, w.ready = items, true
	w.mu.Unlock()
	for wr := range wch {
		if wr.Err() != nil || wr.Canceled {
			return
		}
		w.mu.Lock()
		for _, ev := range wr.Events {
			key := string(ev.Kv.Key)
			if !strings.HasPrefix(key, w.prefix) {
				continue
			}
			if v, ok := w.decode(key, ev.Kv.Value); ev.Type == clientv3.EventTypePut && ok {
				w.items[key] = v
			} else {
				delete(w.items, key)
			}
		}
		w.mu.Unlock()
	}
}

// get is the item under key; ok is false when the copy is not ready.
func (w *watched[T]) get(key string) (v T, found, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.ready {
		return v, false, false
	}
	v, found = w.items[key]
	return v, found, true
}

// each calls fn for every item whose key has the prefix p, under the
// lock (fn must not block); false when the copy is not ready.
func (w *watched[T]) each(p string, fn func(key string, v T)) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.ready {
		return false
	}
	for k, v := range w.items {
		if strings.HasPrefix(k, p) {
			fn(k, v)
		}
	}
	return true
}
