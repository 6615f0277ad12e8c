package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The node records, watched: routing a request to the node that hosts an
// entity needs the host's HTTP URL, and reading the records from etcd on
// every forwarded request cost a round trip to etcd each (docs/cluster.md
// "Request routing", measured there). The cache is filled by one Get and
// kept current by a watch from the Get's revision; while the watch is not
// running (etcd unreachable, a compaction) the cache is not used and
// NodeURL reads etcd as before.

// recordCache is the watched copy of the node records, by etcd key.
type recordCache struct {
	recs  map[string]Record
	ready bool
}

// watchRecords runs until the node stops, re-establishing the watch
// after every failure.
func (n *Node) watchRecords() {
	prefix := "/fangd/nodes/" + n.opts.Name + "/"
	for n.ctx.Err() == nil {
		n.watchRecordsOnce(prefix)
		n.mu.Lock()
		n.cache = recordCache{}
		n.mu.Unlock()
		select {
		case <-n.ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (n *Node) watchRecordsOnce(prefix string) {
	// Require a leader: a node cut off from the etcd quorum gets an error
	// instead of a watch that silently delivers nothing.
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(n.ctx))
	defer cancel()
	gctx, gcancel := context.WithTimeout(ctx, 5*time.Second)
	resp, err := n.etcd.Get(gctx, prefix, clientv3.WithPrefix())
	gcancel()
	if err != nil {
		return
	}
	recs := map[string]Record{}
	for _, kv := range resp.Kvs {
		var r Record
		if json.Unmarshal(kv.Value, &r) == nil && r.MemberID != "" {
			recs[string(kv.Key)] = r
		}
	}
	wch := n.etcd.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	n.mu.Lock()
	n.cache = recordCache{recs: recs, ready: true}
	n.mu.Unlock()
	for wr := range wch {
		if wr.Err() != nil || wr.Canceled {
			return
		}
		n.mu.Lock()
		for _, ev := range wr.Events {
			key := string(ev.Kv.Key)
			if !strings.HasPrefix(key, prefix) {
				continue
			}
			var r Record
			if ev.Type == clientv3.EventTypePut && json.Unmarshal(ev.Kv.Value, &r) == nil && r.MemberID != "" {
				n.cache.recs[key] = r
			} else {
				delete(n.cache.recs, key)
			}
		}
		n.mu.Unlock()
	}
}

// cachedNodeURL is NodeURL from the watched records; ok is false when the
// watch is not running.
func (n *Node) cachedNodeURL(nodeName string) (url string, found, ok bool) {
	r, found, ok := n.cachedNode(nodeName, func(r Record) bool { return r.HTTPURL != "" })
	return r.HTTPURL, found, ok
}

// cachedNode is the record of the live member named nodeName that has
// what usable asks for, from the watched records; ok is false when the
// watch is not running.
func (n *Node) cachedNode(nodeName string, usable func(Record) bool) (rec Record, found, ok bool) {
	n.mu.Lock()
	if !n.cache.ready {
		n.mu.Unlock()
		return Record{}, false, false
	}
	var cands []Record
	for _, r := range n.cache.recs {
		if r.NodeName == nodeName && usable(r) {
			cands = append(cands, r)
		}
	}
	n.mu.Unlock()
	// "up": in this node's topology as well as recorded.
	members := n.C.MemberList.Members()
	for _, r := range cands {
		if members.ContainsID(r.MemberID) {
			return r, true, true
		}
	}
	return Record{}, false, true
}

// NodeAddress is the remoting address (host:port) of the live member named
// nodeName, for a message to an actor on that node; an error if no such
// member is up.
func (n *Node) NodeAddress(ctx context.Context, nodeName string) (string, error) {
	if r, found, ok := n.cachedNode(nodeName, func(r Record) bool { return r.Address != "" }); ok {
		if !found {
			return "", fmt.Errorf("cluster: node %s is not up", nodeName)
		}
		return r.Address, nil
	}
	ms, err := n.Members(ctx)
	if err != nil {
		return "", err
	}
	for _, m := range ms {
		if m.NodeName == nodeName && m.State == "up" && m.Address != "" {
			return m.Address, nil
		}
	}
	return "", fmt.Errorf("cluster: node %s is not up", nodeName)
}
