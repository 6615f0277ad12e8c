package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"sort"
	"strings"
	"sync"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// listing makes an ownedSet's entities the names its nodes advertise
// instead of records somebody stored: <pre>lst/<name>/<node> is node's
// advertisement of name (an advert), written and deleted only by that
// node, and the entity runs only on a node advertising it (assign's
// eligible). For the MCP servers of config.toml (mcpconf.go): each node
// advertises the ones its own file lists.
//
// Adverts are not bound to a lease: one whose node died stays, so that
// every node keeps listing the entity (with no host: calls answer
// host_unreachable) instead of forgetting it 4 s later; a node that
// starts again rewrites its own (its member id changed) and deletes the
// ones its file no longer lists. The rendezvous choice only counts
// adverts whose member id is in the topology.
type listing struct {
	// cond is what each advert write must meet (another kind holding the
	// name: an MCP server added through the API); nil: nothing.
	cond func(name string) []clientv3.Cmp
	// conflicted is told once per name whose advert cond refused.
	conflicted func(name string)

	mu        sync.Mutex
	want      map[string][]byte // name -> this node's advert
	dirty     bool
	conflicts map[string]bool
}

// advert is one node's advertisement; Info is the kind's own part.
type advert struct {
	MemberID string          `json:"member_id"`
	Node     string          `json:"node"`
	Info     json.RawMessage `json:"info,omitempty"`
}

func (s *ownedSet) lstKey(name string) string { return s.pre + "lst/" + name + "/" + s.nodeName }

// advertise sets what this node advertises (name -> the kind's info) and
// runs a round now.
func (s *ownedSet) advertise(infos map[string][]byte) {
	want := make(map[string][]byte, len(infos))
	for name, info := range infos {
		b, _ := json.Marshal(advert{MemberID: s.memberID, Node: s.nodeName, Info: info})
		want[name] = b
	}
	s.list.mu.Lock()
	s.list.want = want
	s.list.dirty = true
	s.list.mu.Unlock()
	s.Kick()
}

// syncAdverts makes this node's adverts in etcd what it wants, when the
// last round saw them differ: missing or changed ones are written (if
// cond holds), ones no longer wanted deleted, together with the owner key
// and state when this node holds the entity (it stops running it here).
func (s *ownedSet) syncAdverts(ctx context.Context) {
	l := s.list
	l.mu.Lock()
	if !l.dirty {
		l.mu.Unlock()
		return
	}
	want := l.want
	l.dirty = false
	l.mu.Unlock()
	r, err := s.cli.Get(ctx, s.pre+"lst/", clientv3.WithPrefix())
	if err != nil {
		s.markDirty()
		return
	}
	mine := map[string][]byte{}
	for _, kv := range r.Kvs {
		name, node, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), s.pre+"lst/"), "/")
		if ok && node == s.nodeName {
			mine[name] = kv.Value
		}
	}
	retry := false
	for name, v := range want {
		if bytes.Equal(mine[name], v) {
			s.setConflict(name, false)
			continue
		}
		var conds []clientv3.Cmp
		if l.cond != nil {
			conds = l.cond(name)
		}
		tr, err := s.cli.Txn(ctx).If(conds...).Then(clientv3.OpPut(s.lstKey(name), string(v))).Commit()
		switch {
		case err != nil:
			retry = true
		case !tr.Succeeded:
			retry = true // tried again each round: the other one may go
			if s.setConflict(name, true) && l.conflicted != nil {
				l.conflicted(name)
			}
		default:
			s.setConflict(name, false)
		}
	}
	lease := s.myLease()
	for name := range mine {
		if _, ok := want[name]; ok {
			continue
		}
		txn := s.cli.Txn(ctx)
		if lease != 0 {
			txn = txn.If(clientv3.Compare(clientv3.LeaseValue(s.ownKey(name)), "=", lease)).
				Then(clientv3.OpDelete(s.lstKey(name)), clientv3.OpDelete(s.ownKey(name)), clientv3.OpDelete(s.stKey(name), clientv3.WithPrefix())).
				Else(clientv3.OpDelete(s.lstKey(name)))
		} else {
			txn = txn.Then(clientv3.OpDelete(s.lstKey(name)))
		}
		if _, err := txn.Commit(); err != nil {
			retry = true
		}
	}
	if retry {
		s.markDirty()
	}
}

func (s *ownedSet) markDirty() {
	s.list.mu.Lock()
	s.list.dirty = true
	s.list.mu.Unlock()
}

// setConflict records whether name's advert is refused; true when that
// is new.
func (s *ownedSet) setConflict(name string, on bool) bool {
	s.list.mu.Lock()
	defer s.list.mu.Unlock()
	if s.list.conflicts == nil {
		s.list.conflicts = map[string]bool{}
	}
	was := s.list.conflicts[name]
	if on {
		s.list.conflicts[name] = true
	} else {
		delete(s.list.conflicts, name)
	}
	return on && !was
}

// readAdverts turns a round's lst/ keys into the entities: each name
// advertised by some node, its record the JSON array of its adverts
// (sorted by node), and the member ids eligible to run it. It marks the
// adverts dirty when this node's in etcd are not the ones it wants (a
// restart, a lost write), so that the next round writes them.
func (s *ownedSet) readAdverts(kvs []*mvccpb.KeyValue) (names []string, records [][]byte, eligible map[string][]string) {
	byName := map[string][]advert{}
	mine := map[string][]byte{}
	for _, kv := range kvs {
		name, node, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), s.pre+"lst/"), "/")
		if !ok {
			continue
		}
		var a advert
		if json.Unmarshal(kv.Value, &a) != nil {
			continue
		}
		a.Node = node
		if node == s.nodeName {
			mine[name] = kv.Value
		}
		byName[name] = append(byName[name], a)
	}
	eligible = make(map[string][]string, len(byName))
	for name := range byName {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		as := byName[name]
		sort.Slice(as, func(i, j int) bool { return as[i].Node < as[j].Node })
		b, _ := json.Marshal(as)
		records = append(records, b)
		for _, a := range as {
			eligible[name] = append(eligible[name], a.MemberID)
		}
	}
	s.list.mu.Lock()
	differ := len(mine) != len(s.list.want) || len(s.list.conflicts) > 0
	for name, v := range s.list.want {
		if !bytes.Equal(mine[name], v) && !s.list.conflicts[name] {
			differ = true
		}
	}
	if differ {
		s.list.dirty = true
	}
	s.list.mu.Unlock()
	return names, records, eligible
}
