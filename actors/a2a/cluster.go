package a2a

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/a2aproject/a2a-go/v2/a2a"

	"github.com/fangd/fangd/actors/kernel"
)

// Cluster mode (docs/cluster.md "A2A tasks across the cluster"): a task
// runs on the node that created it (the one hosting its agent: the HTTP
// layer forwards a message for another node's agent there), and the
// cluster's task directory in etcd (actors/cluster a2a.go) names that node
// so that any node can route a request for the task, keeps the task's
// terminal snapshot, and lets any node mark a task failed when its node
// died first. A single node has no directory: the hooks below are one nil
// check each.

// Cluster is the cluster's A2A task directory as the service uses it.
type Cluster interface {
	// NodeName is this node's name, the host of the tasks it registers.
	NodeName() string
	// Register records a new task as hosted here, in the next batch the
	// directory commits; it returns once that batch is in etcd.
	Register(ctx context.Context, t ClusterTask) error
	// Finished records a task's terminal snapshot (queued and batched,
	// not waited for).
	Finished(t ClusterTask)
	// Forget removes the registration of a task that was not created.
	Forget(id, contextID string)
	// Running lists the tasks the directory says this node runs.
	Running(ctx context.Context) ([]string, error)
}

// ClusterTask is one task's entry in the directory.
type ClusterTask struct {
	ID        string        `json:"id"`
	Node      string        `json:"node"`
	Direction string        `json:"direction"`
	ContextID string        `json:"context_id,omitempty"`
	State     a2a.TaskState `json:"state"`
	Reason    string        `json:"reason,omitempty"`
	UpdatedAt time.Time     `json:"updated_at"`
	// Truncated says Record lost history or artifacts to the size cap.
	Truncated bool `json:"truncated,omitempty"`
	// Record is the task as the host stores it (capped at
	// ClusterRecordMax): what another node answers once the host is gone.
	Record json.RawMessage `json:"record,omitempty"`
}

// Terminal reports whether the entry is a final state.
func (t ClusterTask) Terminal() bool { return t.State.Terminal() }

// Lost is the entry of a task whose node left the cluster before the task
// ended: failed, with a reason naming the node.
func (t ClusterTask) Lost(now time.Time) ClusterTask {
	t.State = a2a.TaskStateFailed
	t.Reason = "cluster node " + t.Node + ", which ran this task, left the cluster before the task finished; its turn was lost"
	t.UpdatedAt = now.UTC()
	return t
}

// ClusterRecordMax caps an entry's task record: etcd holds small values
// (1.5 MiB per request, a batch of entries per Txn), so history and
// artifacts beyond it are cut (Truncated) and the host alone has them.
const ClusterRecordMax = 16 << 10

// clusterRef boxes the directory for an atomic pointer.
type clusterRef struct{ c Cluster }

// UseCluster hands the service the cluster's task directory (cluster mode
// only, before the API serves), and reconciles it with this node's store
// in the background: a task the directory says runs here but which ended
// while the directory did not hear of it (failed by a restart, or its
// final entry lost with a crash) gets its final entry now.
func (s *Service) UseCluster(c Cluster) {
	s.cluster.Store(&clusterRef{c})
	go s.reconcileCluster(c)
}

// ClusterTTL is how long directory entries live in etcd: an hour past the
// longest a task may run, so an entry outlives its task's end by an hour.
func (s *Service) ClusterTTL() time.Duration {
	return time.Hour + max(s.opts.TurnTimeout, s.opts.OutboundTimeout)
}

func (s *Service) reconcileCluster(c Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ids, err := c.Running(ctx)
	if err != nil {
		s.log.Warn().Err(err).Msg("a2a: cluster task directory not reconciled (etcd did not answer)")
		return
	}
	for _, id := range ids {
		// Through the supervisor: it has restored (and failed) the
		// interrupted tasks before it answers.
		snap, err := kernel.Ask[*TaskSnapshot](ctx, s.k, s.sup, &getTask{id: id, scope: scope{admin: true}})
		switch {
		case err == nil && snap.Terminal():
			c.Finished(clusterTask(c.NodeName(), &snap.rec))
		case err != nil && kernel.AsError(err) != nil && kernel.AsError(err).Code == "task_not_found":
			// Registered, never created (a crash in between).
			c.Forget(id, "")
		}
	}
}

// clusterRegister puts a new task in the directory before it is created:
// nothing acknowledges its id before any node can find it.
func (s *Service) clusterRegister(ctx context.Context, rec *taskRecord) error {
	ref := s.cluster.Load()
	if ref == nil {
		return nil
	}
	if err := ref.c.Register(ctx, clusterTask(ref.c.NodeName(), rec)); err != nil {
		s.log.Warn().Err(err).Str("task", rec.ID).Msg("a2a: task not registered in the cluster directory")
		return kernel.Unavailable("the cluster's A2A task directory (etcd) did not answer; the task was not created, try again")
	}
	return nil
}

// clusterForget undoes clusterRegister for a task that was not created.
func (s *Service) clusterForget(rec *taskRecord) {
	if ref := s.cluster.Load(); ref != nil {
		ref.c.Forget(rec.ID, rec.ContextID)
	}
}

// clusterFinished queues a finished task's final entry.
func (s *Service) clusterFinished(rec *taskRecord) {
	if ref := s.cluster.Load(); ref != nil {
		ref.c.Finished(clusterTask(ref.c.NodeName(), rec))
	}
}

// clusterTask is rec's directory entry, its record cut to ClusterRecordMax.
func clusterTask(node string, rec *taskRecord) ClusterTask {
	t := ClusterTask{ID: rec.ID, Node: node, Direction: rec.Direction, ContextID: rec.ContextID,
		State: rec.State, Reason: rec.Reason, UpdatedAt: rec.UpdatedAt}
	raw, err := json.Marshal(rec)
	if err == nil && len(raw) <= ClusterRecordMax {
		t.Record = raw
		return t
	}
	// Too big: keep the result (or the first message) with its text cut,
	// and no artifacts.
	c := rec.clone()
	c.Artifacts, c.Push = nil, nil
	m := c.result()
	if m == nil && len(c.History) > 0 {
		m = c.History[0]
	}
	c.History = nil
	if m != nil {
		cut := *m
		cut.Parts = a2a.ContentParts{a2a.NewTextPart(cutText(partsText(m.Parts), ClusterRecordMax/2) +
			" [cut to fit the cluster directory: the full task is on node " + node + "]")}
		cut.Metadata = nil
		c.History = []*a2a.Message{&cut}
	}
	t.Truncated = true
	if raw, err := json.Marshal(&c); err == nil && len(raw) <= ClusterRecordMax {
		t.Record = raw
	}
	return t
}

func partsText(parts a2a.ContentParts) string {
	var out []byte
	for _, p := range parts {
		if v, ok := p.Content.(a2a.Text); ok {
			out = appendLine(out, string(v))
		}
	}
	return string(out)
}

// HasTask reports whether this node has task id (running or stored), in
// either direction: the HTTP layer asks before it looks elsewhere.
func (s *Service) HasTask(ctx context.Context, id string) bool {
	_, err := kernel.Ask[*TaskSnapshot](ctx, s.k, s.sup, &getTask{id: id, scope: scope{admin: true}})
	return err == nil
}

// AdoptClusterTask stores a finished task of another node, from its
// directory entry, so that this node answers for it (every binding, with
// the caller checks of a local task) once its node is gone. The entry's
// state and reason win over the record's (the sweep marks a lost task
// failed in the entry only).
func (s *Service) AdoptClusterTask(t ClusterTask) error {
	if !t.Terminal() || len(t.Record) == 0 {
		return errors.New("a2a: only a finished task with a record can be adopted")
	}
	var rec taskRecord
	if err := json.Unmarshal(t.Record, &rec); err != nil {
		return err
	}
	if rec.ID != t.ID {
		return errors.New("a2a: directory entry and record disagree")
	}
	if _, err := s.supervisorTasks().Get(t.ID); err == nil {
		return nil // already here
	}
	rec.State, rec.Reason, rec.UpdatedAt = t.State, t.Reason, t.UpdatedAt
	// Push targets' secrets are in the host's vault: the task sends no
	// more updates, and their configs stay readable.
	return s.supervisorTasks().Put(rec.ID, rec)
}

// cutText is kernel.CutUTF8 without the flag.
func cutText(s string, n int) string {
	s, _ = kernel.CutUTF8(s, n)
	return s
}
