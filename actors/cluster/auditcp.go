package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fangd/fangd/actors/audit"
)

// Cross-node audit checkpoints. Each node keeps its own hash chain (one
// append per request is far too many etcd writes), so what makes the
// chains answer for each other is this: every checkpointEvery a node
// writes its chain's tip (length and tip hash) to etcd, reads the other
// nodes' tips, and when one of them moved it appends one
// cluster_checkpoint entry listing them to its own chain. A node that
// later rewrites its history cannot match the tips the others' chains
// committed to; and at start a node compares its chain with the tip etcd
// recorded for it, so a chain rolled back or replaced shows at once
// (cluster_checkpoint_mismatch, GET /api/cluster). docs/cluster.md,
// "Audit checkpoints across the cluster".

// checkpointEvery is how often a node writes its tip and reads the others'.
const checkpointEvery = 10 * time.Second

// Audit event types this file appends.
const (
	EventCheckpoint         = "cluster_checkpoint"
	EventCheckpointMismatch = "cluster_checkpoint_mismatch"
)

// AuditTip is a chain's tip as written to etcd, under
// /fangd/audit/<cluster>/tip/<node>. Checkpoint is true when the tip
// entry is the node's own cluster_checkpoint entry (see changed).
type AuditTip struct {
	Node       string    `json:"node"`
	Seq        uint64    `json:"seq"`
	Hash       string    `json:"hash"`
	At         time.Time `json:"at"`
	Checkpoint bool      `json:"checkpoint,omitempty"`
}

// AuditChain is what checkpoints need of this node's audit log
// (LogChain; tests fake it).
type AuditChain interface {
	// Tip is the committed chain's length (the last entry's seq) and tip hash.
	Tip(ctx context.Context) (seq uint64, hash string, err error)
	// HashAt is the hash of the entry at seq; stored is false when the
	// chain holds no such entry (shorter, or trimmed by retention).
	HashAt(ctx context.Context, seq uint64) (hash string, stored bool, err error)
	// Append durably appends an entry by the daemon and returns its seq.
	Append(ctx context.Context, eventType, outcome, details string) (seq uint64, err error)
}

// AuditCheckpoint is the start-up comparison as GET /api/cluster shows it
// in this node's own member entry: measured once, at start.
type AuditCheckpoint struct {
	// OK is false only when the chain disagrees with its recorded tip.
	OK bool `json:"ok"`
	// Status: "match", "mismatch", "first" (no tip recorded for this
	// node yet), "trimmed" (the recorded entry was trimmed by retention:
	// not checkable) or "unchecked" (etcd or the chain did not answer).
	Status   string    `json:"status"`
	Recorded *AuditTip `json:"recorded,omitempty"`
	// Local is this chain's tip, and LocalHash its hash at the recorded
	// seq when it has that entry, when checked.
	Local     *AuditTip `json:"local,omitempty"`
	LocalHash string    `json:"local_hash_at_recorded_seq,omitempty"`
	Detail    string    `json:"detail,omitempty"`
	CheckedAt time.Time `json:"checked_at"`
	// LastWritten is the last tip this node wrote to etcd.
	LastWritten *AuditTip `json:"last_written,omitempty"`
}

// AuditCheckpoints writes this node's tip and records the others'.
type AuditCheckpoints struct {
	cli     *clientv3.Client
	prefix  string // /fangd/audit/<cluster>/tip/
	node    string
	chain   AuditChain
	log     zerolog.Logger
	stopped chan struct{}
	cancel  context.CancelFunc

	mu      sync.Mutex
	check   AuditCheckpoint
	written *AuditTip
	// seen: the other nodes' tips as this chain last recorded them.
	seen map[string]AuditTip
	// ownCP is the seq of this node's last cluster_checkpoint entry.
	ownCP uint64
}

func newAuditCheckpoints(cli *clientv3.Client, cluster, node string, chain AuditChain, log zerolog.Logger) *AuditCheckpoints {
	return &AuditCheckpoints{cli: cli, prefix: "/fangd/audit/" + cluster + "/tip/", node: node, chain: chain,
		log: log, seen: map[string]AuditTip{}}
}

// StartAuditCheckpoints checks this node's chain against the tip etcd
// recorded for it, then writes its tip and records the others' every
// checkpointEvery until Stop.
func (n *Node) StartAuditCheckpoints(chain AuditChain) *AuditCheckpoints {
	a := newAuditCheckpoints(n.etcd, n.opts.Name, n.opts.NodeName, chain, n.opts.Log)
	ctx, cancel := context.WithCancel(n.ctx)
	a.cancel, a.stopped = cancel, make(chan struct{})
	a.startCheck(ctx)
	a.round(ctx)
	go a.run(ctx)
	n.mu.Lock()
	n.auditcp = a
	n.mu.Unlock()
	return a
}

func (a *AuditCheckpoints) run(ctx context.Context) {
	defer close(a.stopped)
	t := time.NewTicker(checkpointEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.round(ctx)
		}
	}
}

func (a *AuditCheckpoints) stop() {
	a.cancel()
	<-a.stopped
}

// State is the start-up comparison and the last tip written.
func (a *AuditCheckpoints) State() AuditCheckpoint {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.check
	if a.written != nil {
		w := *a.written
		s.LastWritten = &w
	}
	return s
}

func (a *AuditCheckpoints) setCheck(c AuditCheckpoint) {
	c.CheckedAt = time.Now().UTC()
	a.mu.Lock()
	a.check = c
	a.mu.Unlock()
}

// startCheck compares the chain with the tip etcd recorded for this node:
// a chain shorter than the recorded seq, or with another hash at it, was
// rolled back or replaced since.
func (a *AuditCheckpoints) startCheck(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	unchecked := func(err error) {
		a.log.Warn().Err(err).Msg("audit checkpoint: this chain was not compared with its recorded tip")
		a.setCheck(AuditCheckpoint{OK: true, Status: "unchecked", Detail: err.Error()})
	}
	resp, err := a.cli.Get(ctx, a.prefix+a.node)
	if err != nil {
		unchecked(fmt.Errorf("etcd: %w", err))
		return
	}
	if len(resp.Kvs) == 0 {
		a.setCheck(AuditCheckpoint{OK: true, Status: "first"})
		return
	}
	var rec AuditTip
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		unchecked(fmt.Errorf("recorded tip does not decode: %w", err))
		return
	}
	seq, tip, err := a.chain.Tip(ctx)
	if err != nil {
		unchecked(err)
		return
	}
	c := AuditCheckpoint{OK: true, Status: "match", Recorded: &rec, Local: &AuditTip{Node: a.node, Seq: seq, Hash: tip}}
	if err := a.compare(ctx, rec, seq, &c); err != nil {
		unchecked(err)
		return
	}
	a.setCheck(c)
	if c.OK {
		return
	}
	a.log.Error().Uint64("recorded_seq", rec.Seq).Str("recorded_hash", rec.Hash).Uint64("local_seq", seq).
		Str("local_hash", c.LocalHash).Msg("audit checkpoint mismatch: this node's chain does not match the tip it wrote to etcd (rolled back or replaced)")
	if _, err := a.chain.Append(ctx, EventCheckpointMismatch, "error",
		fmt.Sprintf("recorded seq %d hash %s at %s; local seq %d tip %s: %s", rec.Seq, rec.Hash, rec.At.Format(time.RFC3339), seq, tip, c.Detail)); err != nil {
		a.log.Error().Err(err).Msg("audit checkpoint mismatch not audited")
	}
}

// compare fills c with how the chain of seq entries matches rec.
func (a *AuditCheckpoints) compare(ctx context.Context, rec AuditTip, seq uint64, c *AuditCheckpoint) error {
	switch {
	case rec.Seq == 0: // an empty chain was recorded: nothing to compare
		return nil
	case seq < rec.Seq:
		c.OK, c.Status = false, "mismatch"
		c.Detail = fmt.Sprintf("the chain has %d entries, etcd recorded %d ending in %s", seq, rec.Seq, rec.Hash)
		return nil
	}
	h, stored, err := a.chain.HashAt(ctx, rec.Seq)
	switch {
	case err != nil:
		return err
	case !stored:
		c.Status, c.Detail = "trimmed", fmt.Sprintf("entry %d is no longer stored (retention): not checkable", rec.Seq)
	case h != rec.Hash:
		c.OK, c.Status, c.LocalHash = false, "mismatch", h
		c.Detail = fmt.Sprintf("entry %d hashes to %s, etcd recorded %s", rec.Seq, h, rec.Hash)
	default:
		c.LocalHash = h
	}
	return nil
}

// round writes this node's tip when it moved, then records the others'
// tips in one cluster_checkpoint entry when any of them moved.
func (a *AuditCheckpoints) round(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, checkpointEvery)
	defer cancel()
	seq, hash, err := a.chain.Tip(ctx)
	if err != nil {
		a.log.Warn().Err(err).Msg("audit checkpoint: no tip")
		return
	}
	a.mu.Lock()
	moved := a.written == nil || a.written.Seq != seq || a.written.Hash != hash
	own := seq == a.ownCP
	a.mu.Unlock()
	if moved {
		t := AuditTip{Node: a.node, Seq: seq, Hash: hash, At: time.Now().UTC(), Checkpoint: own}
		b, _ := json.Marshal(t)
		if _, err := a.cli.Put(ctx, a.prefix+a.node, string(b)); err != nil {
			a.log.Warn().Err(err).Msg("audit checkpoint: tip not written")
		} else {
			a.mu.Lock()
			a.written = &t
			a.mu.Unlock()
		}
	}
	resp, err := a.cli.Get(ctx, a.prefix, clientv3.WithPrefix())
	if err != nil {
		a.log.Warn().Err(err).Msg("audit checkpoint: other tips not read")
		return
	}
	var others []AuditTip
	a.mu.Lock()
	changed := false
	for _, kv := range resp.Kvs {
		var t AuditTip
		name := strings.TrimPrefix(string(kv.Key), a.prefix)
		if name == a.node || json.Unmarshal(kv.Value, &t) != nil || t.Node != name {
			continue
		}
		others = append(others, t)
		changed = changed || a.changed(a.seen[name], t)
	}
	a.mu.Unlock()
	if !changed {
		return
	}
	sort.Slice(others, func(i, j int) bool { return others[i].Node < others[j].Node })
	type peer struct {
		Node string `json:"node"`
		Seq  uint64 `json:"seq"`
		Hash string `json:"hash"`
	}
	list := make([]peer, len(others))
	for i, t := range others {
		list[i] = peer{t.Node, t.Seq, t.Hash}
	}
	b, _ := json.Marshal(map[string]any{"tips": list})
	cpSeq, err := a.chain.Append(ctx, EventCheckpoint, "ok", string(b))
	if err != nil {
		a.log.Warn().Err(err).Msg("audit checkpoint: other tips not recorded")
		return
	}
	a.mu.Lock()
	a.ownCP = cpSeq
	for _, t := range others {
		a.seen[t.Node] = t
	}
	a.mu.Unlock()
}

// changed says whether another node's tip moved since this chain
// recorded it. A move by exactly that node's own checkpoint entry does
// not count: it commits only to tips this chain has recorded already,
// and counting it would have every idle node append a checkpoint every
// round in answer to the others' (the entry is committed anyway with
// that node's next real entry).
func (a *AuditCheckpoints) changed(was, now AuditTip) bool {
	if was.Seq == now.Seq && was.Hash == now.Hash {
		return false
	}
	return !(now.Checkpoint && was.Hash != "" && now.Seq == was.Seq+1)
}

// LogChain is the daemon's audit log as an AuditChain.
func LogChain(l *audit.Log) AuditChain { return logChain{l} }

type logChain struct{ l *audit.Log }

func (c logChain) Tip(ctx context.Context) (uint64, string, error) {
	_, total, tip, err := c.l.RecentItems(ctx, 0, nil)
	return total, tip, err
}

// HashAt reads the one entry through a walk bounded to it (one store read).
func (c logChain) HashAt(ctx context.Context, seq uint64) (string, bool, error) {
	w, err := c.l.Walk(ctx, audit.Filter{AfterID: seq - 1, BeforeID: seq + 1}, false)
	if err != nil {
		return "", false, err
	}
	for !w.Done() {
		ms, err := w.Next(ctx)
		if err != nil {
			return "", false, err
		}
		for _, m := range ms {
			if m.Entry.ID == seq {
				return m.Entry.Hash, true, nil
			}
		}
	}
	return "", false, nil
}

func (c logChain) Append(ctx context.Context, eventType, outcome, details string) (uint64, error) {
	e, err := c.l.Append(ctx, audit.Event{EventType: eventType, Outcome: outcome, Details: details, Actor: "daemon"})
	return e.ID, err
}
