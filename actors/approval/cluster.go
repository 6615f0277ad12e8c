package approval

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/kernel"
)

// Cluster mode (docs/cluster.md, "Approvals across the cluster"): the node
// that raises a request (its origin: the agent waits there) keeps it in
// its own store and actor as on a single node, and also puts a small
// ClusterRecord in etcd. Every node lists the cluster's records; a
// decision through any node is one compare-and-swap pending -> decided in
// etcd, so exactly one of two deciders wins; the origin watches its
// records and applies a decision made elsewhere to its waiting request.
// Any node's sweep marks an expired pending record expired, so a dead
// origin leaves nothing pending forever. Without UseCluster none of this
// runs.

// ClusterRecord is what etcd holds of one request: what GET
// /api/approvals shows of it on the origin, so a person deciding through
// another node sees what they approve. The description and the payload
// are capped (clusterMaxDescription, clusterMaxPayload; Truncated says
// one was cut) so a record stays far below etcd's request limit. The
// origin shows the payload unredacted (it is the tool call's arguments,
// which the person must see), and etcd holds the same; no secret of
// fangd's own (vault, TOTP) is ever in a record.
type ClusterRecord struct {
	ID          string     `json:"id"`
	AgentID     string     `json:"agent_id"`
	AgentName   string     `json:"agent_name"`
	Tool        string     `json:"tool"`
	Summary     string     `json:"summary"`
	Risk        string     `json:"risk"`
	Node        string     `json:"node"` // the origin's node name
	CreatedAt   time.Time  `json:"created_at"`
	Deadline    time.Time  `json:"deadline"`
	Status      string     `json:"status"`
	DecidedAt   *time.Time `json:"decided_at,omitempty"`
	DecidedBy   string     `json:"decided_by,omitempty"`
	DecidedVia  string     `json:"decided_via,omitempty"`
	DecidedOn   string     `json:"decided_on,omitempty"` // the deciding node
	Reason      string     `json:"reason,omitempty"`
	TOTP        bool       `json:"totp_required"`
	RequestedBy string     `json:"requested_by"`
	// Description, Payload, SessionID and TimeoutSecs are as on the
	// origin (absent from records written before they were kept).
	Description string          `json:"description,omitempty"`
	Payload     json.RawMessage `json:"payload,omitempty"`
	SessionID   string          `json:"session_id,omitempty"`
	TimeoutSecs int             `json:"timeout_secs,omitempty"`
	Truncated   bool            `json:"truncated,omitempty"`
}

// Caps of what a record keeps of a request (the origin keeps all of it):
// a record is at most ~14 KiB, far below etcd's 1.5 MiB request limit.
const (
	clusterMaxDescription = 4 << 10
	clusterMaxPayload     = 8 << 10
)

// Cluster is the etcd side (actors/cluster.Approvals).
type Cluster interface {
	// NodeName is this node's name (a record's origin).
	NodeName() string
	// Put stores a new pending record.
	Put(ctx context.Context, rec ClusterRecord) error
	// Get reads one record; ok is false when etcd has none.
	Get(ctx context.Context, id string) (rec ClusterRecord, ok bool, err error)
	// List reads every record.
	List(ctx context.Context) ([]ClusterRecord, error)
	// Decide moves a pending record to next's status in one Txn
	// conditioned on the record being unchanged since it was read. A
	// pending record past its deadline becomes expired instead (won is
	// then false unless next is the expiry). cur is the record after the
	// call; ok is false when etcd has no record.
	Decide(ctx context.Context, id string, next func(cur ClusterRecord) ClusterRecord) (cur ClusterRecord, won, ok bool, err error)
}

type clusterBox struct{ c Cluster }

// clusterDecided is a decision made in etcd (through another node, or by
// a sweep) for a request this node raised: its actor applies it without
// asking etcd again.
type clusterDecided struct{ rec ClusterRecord }

// UseCluster makes approvals cluster-wide (cluster mode only).
func (a *Approvals) UseCluster(c Cluster) { a.env.cluster.Store(&clusterBox{c}) }

func (e *env) clusterStore() Cluster {
	if b := e.cluster.Load(); b != nil {
		return b.c
	}
	return nil
}

// clusterRecordOf is the etcd record of a new request.
func clusterRecordOf(rec *Approval, node string, totp bool) ClusterRecord {
	desc, cutDesc := kernel.CutUTF8(rec.Description, clusterMaxDescription)
	payload, cutPayload := clusterPayload(rec.Payload)
	return ClusterRecord{ID: rec.ID, AgentID: rec.AgentID, AgentName: rec.AgentName, Tool: rec.Action,
		Summary: truncate(rec.ActionSummary, MaxActionSummary), Risk: rec.RiskLevel, Node: node, CreatedAt: rec.RequestedAt,
		Deadline: rec.ExpiresAt, Status: StatusPending, TOTP: totp, RequestedBy: rec.RequestedBy,
		Description: desc, Payload: payload, SessionID: rec.SessionID, TimeoutSecs: rec.TimeoutSecs,
		Truncated: cutDesc || cutPayload}
}

// clusterPayload is the payload a record keeps: as it is up to
// clusterMaxPayload bytes, else its first bytes as a JSON string (cut
// JSON is not JSON), cut true.
func clusterPayload(p json.RawMessage) (json.RawMessage, bool) {
	if len(p) <= clusterMaxPayload {
		return p, false
	}
	// The string's quoting grows it; cut the text so the result still
	// fits (escapes at most double ASCII; 6x for control characters).
	n := clusterMaxPayload
	for {
		s, _ := kernel.CutUTF8(string(p), n)
		b, err := json.Marshal(s)
		if err == nil && len(b) <= clusterMaxPayload {
			return b, true
		}
		n /= 2
	}
}

// approvalOf shows a record of another node through the API.
func approvalOf(r ClusterRecord) *Approval {
	a := &Approval{ID: r.ID, AgentID: r.AgentID, AgentName: r.AgentName, Action: r.Tool, ToolName: r.Tool,
		ActionSummary: r.Summary, RiskLevel: r.Risk, Status: r.Status, RequestedAt: r.CreatedAt, CreatedAt: r.CreatedAt,
		ExpiresAt: r.Deadline, TimeoutSecs: int(r.Deadline.Sub(r.CreatedAt) / time.Second), DecidedAt: r.DecidedAt,
		DecidedBy: r.DecidedBy, DecidedVia: r.DecidedVia, Reason: r.Reason, RequestedBy: r.RequestedBy,
		SecondFactorRequired: r.TOTP, SecondFactor: FactorNone, Node: r.Node,
		Description: r.Description, Payload: r.Payload, SessionID: r.SessionID, Truncated: r.Truncated}
	if r.TimeoutSecs > 0 {
		a.TimeoutSecs = r.TimeoutSecs
	}
	if len(a.Payload) == 0 {
		a.Payload = json.RawMessage("null") // a record from before payloads were kept
	}
	return a
}

// publishCluster puts a new request's record in etcd (from the creation's
// goroutine, before decisions are let through). A failure leaves the
// request to its node alone, logged.
func (e *env) publishCluster(rec *Approval) {
	cl := e.clusterStore()
	if cl == nil {
		return
	}
	totp := false
	if rec.SecondFactorRequired {
		ctx, cancel := context.WithTimeout(context.Background(), kernel.DefaultAskTimeout)
		st, err := kernel.Ask[*TOTPStatus](ctx, e.k, e.totp, &TOTPStatusQuery{})
		cancel()
		// Unknown: demand the code (a node without an enrolment then
		// cannot approve it, rather than approve it without one).
		totp = err != nil || st.Enforced
	}
	cr := clusterRecordOf(rec, cl.NodeName(), totp)
	if p := e.policy.Load(); p.TimeoutAction == TimeoutEscalate {
		// The origin escalates as on a single node; etcd holds the last
		// deadline, the one a sweep enforces when the origin is gone.
		cr.Deadline = cr.Deadline.Add(time.Duration(max(0, p.MaxEscalations-rec.Escalations)*p.EscalateSecs) * time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := cl.Put(ctx, cr); err != nil {
		e.log.Error().Err(err).Str("approval_id", rec.ID).Msg("approval not stored in etcd: only this node lists and decides it")
	}
}

// clusterDecide runs a decision of a request this node raised through
// etcd first (from the request actor's goroutine). It answers nil to go
// on, or the record that was decided elsewhere (the caller applies it and
// refuses the decision); a request etcd does not know stays local.
func (e *env) clusterDecide(rec *Approval, status string, by Decider, reason string, at time.Time) (*ClusterRecord, error) {
	cl := e.clusterStore()
	if cl == nil {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cur, won, ok, err := cl.Decide(ctx, rec.ID, func(cur ClusterRecord) ClusterRecord {
		return decidedRecord(cur, status, by, reason, cl.NodeName(), at)
	})
	switch {
	case err != nil && (by.Via == ViaTimeout || by.Via == ViaSystem):
		// The deadline and a withdrawal hold here even with etcd away;
		// the record there is swept expired at its deadline.
		e.log.Warn().Err(err).Str("approval_id", rec.ID).Msg("approval decided here without etcd")
		return nil, nil
	case err != nil:
		return nil, kernel.Unavailable("the cluster store did not answer: %v", err)
	case !ok || won:
		return nil, nil
	case by.Via == ViaTimeout && cur.Status == StatusExpired:
		// A sweep found it first: the policy's own timeout outcome holds.
		return nil, nil
	}
	return &cur, nil
}

func decidedRecord(cur ClusterRecord, status string, by Decider, reason, node string, at time.Time) ClusterRecord {
	at = at.UTC()
	cur.Status, cur.DecidedAt, cur.DecidedBy, cur.DecidedVia, cur.DecidedOn = status, &at, by.Identity, by.Via, node
	cur.Reason = truncate(reason, 200)
	return cur
}

// ApplyCluster hands a decided record of a request this node raised to
// its waiting request (the cluster watch calls it). A request already
// decided here is left alone.
func (a *Approvals) ApplyCluster(rec ClusterRecord) {
	if rec.Status == StatusPending {
		return
	}
	a.env.k.System.Root.Send(a.pid, &clusterDecided{rec: rec})
}

// decideRemote decides a request another node raised (it is not in this
// node's store): the approver check and the TOTP code (against the
// cluster's enrolment) here, then the CAS
// in etcd, audited here as on a single node. The origin's watch resumes
// its waiting call.
func (a *Approvals) decideRemote(ctx context.Context, cl Cluster, d Decide) (*Approval, error) {
	cur, ok, err := cl.Get(ctx, d.ID)
	if err != nil {
		return nil, kernel.Unavailable("the cluster store did not answer: %v", err)
	}
	if !ok {
		return nil, notFound(d.ID)
	}
	e := a.env
	verb := "reject"
	if d.Approve {
		verb = "approve"
	}
	refuse := func(kerr *kernel.Error) (*Approval, error) {
		outcome := "rejected"
		if kerr.Kind == kernel.KindForbidden {
			outcome = "denied"
		}
		_ = e.appendAudit(audit.Event{EventType: "approval_decision_refused", AgentID: cur.AgentID, Outcome: outcome, Actor: d.By.Identity, SourceIP: d.By.SourceIP,
			Details: fmt.Sprintf("id=%s attempt=%s via=%s reason=%s node=%s", d.ID, verb, d.By.Via, kerr.Code, cur.Node)})
		return nil, kerr
	}
	if cur.Status != StatusPending {
		return refuse(alreadyDecided(approvalOf(cur)))
	}
	if d.By.Via == ViaAPI && !e.policy.Load().APIApprover(d.By.Identity) {
		return refuse(kernel.Errorf(kernel.KindForbidden, "not_an_approver",
			"%s is not on the approver list ([approval] approvers) and cannot decide approvals", d.By.Identity))
	}
	status, factor := StatusRejected, FactorNone
	switch {
	case d.Modify:
		status = StatusModified
	case d.Approve:
		status = StatusApproved
		if cur.TOTP {
			v, err := kernel.Ask[*verified](ctx, e.k, e.totp, &verify{Code: d.Code, Who: d.By, ApprovalID: d.ID})
			if err != nil {
				return nil, err // the TOTP actor audited a failure
			}
			// The enrolment is the cluster's (totpcluster.go): none
			// confirmed now (revoked since the request was raised) asks
			// for no code, as on the origin.
			factor = v.factor
		}
	}
	now := e.now()
	next, won, ok, err := cl.Decide(ctx, d.ID, func(c ClusterRecord) ClusterRecord {
		return decidedRecord(c, status, d.By, d.Reason, cl.NodeName(), now)
	})
	switch {
	case err != nil:
		return nil, kernel.Unavailable("the cluster store did not answer: %v", err)
	case !ok:
		return nil, notFound(d.ID)
	case !won:
		return refuse(alreadyDecided(approvalOf(next)))
	}
	rec := approvalOf(next)
	rec.SecondFactor = factor
	details := fmt.Sprintf("id=%s action=%s risk=%s via=%s second_factor=%s node=%s", rec.ID, rec.Action, rec.RiskLevel, d.By.Via, factor, cur.Node)
	if d.Reason != "" {
		details += " reason=" + truncate(d.Reason, 200)
	}
	if err := e.appendAudit(audit.Event{EventType: "approval_" + status, AgentID: rec.AgentID, Outcome: status, Actor: d.By.Identity,
		SourceIP: d.By.SourceIP, Details: details}); err != nil {
		return nil, err
	}
	return rec, nil
}

// mergeCluster adds the other nodes' records to a page of this node's:
// pending ones (oldest first) after this node's pending ones, then the
// decided ones (newest first), and pages the whole.
func mergeCluster(local *Page, others []ClusterRecord, status string, offset, limit int) *Page {
	var pend, done []*Approval
	for _, a := range local.Approvals {
		if a.Pending() {
			pend = append(pend, a)
		} else {
			done = append(done, a)
		}
	}
	extra := 0
	for _, r := range others {
		if status != "" && r.Status != status {
			continue
		}
		extra++
		if r.Status == StatusPending {
			pend = append(pend, approvalOf(r))
		} else {
			done = append(done, approvalOf(r))
		}
	}
	sort.SliceStable(pend, func(i, j int) bool { return pend[i].RequestedAt.Before(pend[j].RequestedAt) })
	sort.SliceStable(done, func(i, j int) bool { return decidedBefore(done[j], done[i]) })
	all := append(pend, done...)
	p := &Page{Total: local.Total + extra, Offset: offset, Limit: limit, Approvals: []*Approval{}}
	if offset < len(all) {
		p.Approvals = all[offset:min(len(all), offset+limit)]
	}
	return p
}

// others are the records etcd holds of the other nodes' requests.
func (a *Approvals) others(ctx context.Context, cl Cluster) ([]ClusterRecord, error) {
	all, err := cl.List(ctx)
	if err != nil {
		return nil, kernel.Unavailable("the cluster store did not answer: %v", err)
	}
	out := all[:0]
	for _, r := range all {
		if r.Node != cl.NodeName() {
			out = append(out, r)
		}
	}
	return out, nil
}

// remotePoll is how often a long poll on another node's request reads
// etcd.
const remotePoll = 250 * time.Millisecond

// waitRemote is the long poll on a request another node raised: its
// record is read from etcd until it is decided or d passes.
func (a *Approvals) waitRemote(ctx context.Context, cur *Approval, d time.Duration) (*Approval, error) {
	t := time.NewTicker(remotePoll)
	defer t.Stop()
	end := time.After(d)
	for cur.Pending() {
		select {
		case <-ctx.Done():
			return cur, nil
		case <-end:
			return cur, nil
		case <-t.C:
		}
		next, err := a.Get(ctx, cur.ID)
		if err != nil {
			return cur, nil
		}
		cur = next
	}
	return cur, nil
}

func isNotFound(err error) bool {
	var ke *kernel.Error
	return errors.As(err, &ke) && ke.Kind == kernel.KindNotFound
}
