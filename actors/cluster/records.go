package cluster

import (
	"context"
	"encoding/json"
	"fmt"
)

// The node records, watched: routing a request to the node that hosts an
// entity needs the host's HTTP URL, and reading the records from etcd on
// every forwarded request cost a round trip to etcd each (docs/cluster.md
// "Request routing", measured there). The cache is filled by one Get and
// kept current by a watch from the Get's revision; while the watch is not
// running (etcd unreachable, a compaction) the cache is not used and
// NodeURL reads etcd as before (watched.go).

// newRecordCache is the watched copy of the node records, by etcd key.
func newRecordCache(cluster string) *watched[Record] {
	return newWatched("/fangd/nodes/"+cluster+"/", func(_ string, val []byte) (Record, bool) {
		var r Record
		ok := json.Unmarshal(val, &r) == nil && r.MemberID != ""
		return r, ok
	})
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
	var cands []Record
	if !n.records.each("", func(_ string, r Record) {
		if r.NodeName == nodeName && usable(r) {
			cands = append(cands, r)
		}
	}) {
		return Record{}, false, false
	}
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
