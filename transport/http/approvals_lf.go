package http

import (
	"context"
	"fmt"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/agent"
	"github.com/fangd/fangd/actors/approval"
	"github.com/fangd/fangd/actors/kernel"
)

// The approval routes LibreFang's clients call beyond the seed page's
// (issue 16): a badge count, the recent decisions, batch and per-session
// decisions, and modify (send a call back with feedback). Each answer
// carries LibreFang's fields; decisions go through the same Decide as
// /approve and /reject, so approvers, TOTP and the audit log hold alike.

// MaxApprovalBatch is LibreFang's cap on ids in one POST /api/approvals/batch.
const MaxApprovalBatch = 100

// allApprovals pages through the index for every record with status
// (bounded: pending requests by max_pending_per_agent, decided ones by
// keep_decided).
func (s *Server) allApprovals(c context.Context, status string) ([]*approval.Approval, error) {
	var out []*approval.Approval
	for off := 0; ; {
		p, err := s.deps.Approvals.List(c, status, off, 500)
		if err != nil {
			return nil, err
		}
		out = append(out, p.Approvals...)
		off += len(p.Approvals)
		if len(p.Approvals) == 0 || off >= p.Total {
			return out, nil
		}
	}
}

// approvalCount serves GET /api/approvals/count: {"pending": n}.
func (s *Server) approvalCount(ctx *fasthttp.RequestCtx) error {
	p, err := s.deps.Approvals.List(s.reqCtx(ctx), approval.StatusPending, 0, 1)
	if err != nil {
		return err
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]int{"pending": p.Total})
	return nil
}

// approvalAuditItem is one decision as LibreFang's approval audit shows it
// (decision in its words), alongside fangd's record.
type approvalAuditItem struct {
	*approval.Approval
	RequestID        string  `json:"request_id"`
	Decision         string  `json:"decision"`
	Feedback         *string `json:"feedback"`
	SecondFactorUsed bool    `json:"second_factor_used"`
}

// lfDecision is LibreFang's word for a decided status.
var lfDecision = map[string]string{approval.StatusApproved: "approved", approval.StatusRejected: "denied",
	approval.StatusExpired: "timed_out", approval.StatusModified: "modify_and_retry", approval.StatusCancelled: "skipped"}

// approvalAudit serves GET /api/approvals/audit?limit=&offset=&agent_id=&tool_name=:
// the decisions the approvals index keeps ([approval] keep_decided), newest
// first. The full trail, older decisions included, is GET /api/audit.
func (s *Server) approvalAudit(ctx *fasthttp.RequestCtx) error {
	offset, err := intQuery(ctx, 0, 0, 1<<30, "offset")
	if err != nil {
		return err
	}
	limit, err := intQuery(ctx, 50, 0, 500, "limit")
	if err != nil {
		return err
	}
	agentID := string(ctx.QueryArgs().Peek("agent_id"))
	tool := string(ctx.QueryArgs().Peek("tool_name"))
	all, err := s.allApprovals(s.reqCtx(ctx), "")
	if err != nil {
		return err
	}
	items := []approvalAuditItem{}
	total := 0
	for _, a := range all {
		if a.Pending() || (agentID != "" && a.AgentID != agentID && a.AgentName != agentID) || (tool != "" && a.Action != tool) {
			continue
		}
		total++
		if total <= offset || len(items) >= limit {
			continue
		}
		it := approvalAuditItem{Approval: a, RequestID: a.ID, Decision: lfDecision[a.Status],
			SecondFactorUsed: a.SecondFactor == approval.FactorTOTP || a.SecondFactor == approval.FactorRecovery}
		if a.Status == approval.StatusModified {
			f := a.Reason
			it.Feedback = &f
		}
		items = append(items, it)
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"items": items, "approvals": items, "total": total, "offset": offset, "limit": limit})
	return nil
}

type modifyBody struct {
	Feedback string `json:"feedback"`
}

// modifyApproval serves POST /api/approvals/{id}/modify {"feedback"}: the
// call does not run; its agent is told the feedback and to retry with
// changes (status "modified").
func (s *Server) modifyApproval(ctx *fasthttp.RequestCtx) error {
	id, err := approvalID(ctx)
	if err != nil {
		return err
	}
	var b modifyBody
	if err := decodeOptionalJSON(ctx, &b); err != nil {
		return err
	}
	fb := strings.TrimSpace(b.Feedback)
	if len([]rune(fb)) > approval.MaxReason {
		return badRequest("invalid_input", fmt.Sprintf("feedback has more than %d characters", approval.MaxReason))
	}
	rec, err := s.deps.Approvals.Decide(s.reqCtxWait(ctx), approval.Decide{ID: id, Modify: true, Reason: fb, By: decider(ctx)})
	if err != nil {
		auditDetails(ctx, "approval "+id+" not sent back")
		return err
	}
	auditDetails(ctx, "approval "+id+" sent back for changes")
	writeJSON(ctx, fasthttp.StatusOK, rec)
	return nil
}

type batchBody struct {
	IDs      []string `json:"ids"`
	Decision string   `json:"decision"`
	Reason   string   `json:"reason"`
}

// batchResult is one id's outcome in a batch: LibreFang's fields, and
// fangd's record when the decision was made.
type batchResult struct {
	ID        string             `json:"id"`
	Status    string             `json:"status"` // "ok" or "error"
	Decision  string             `json:"decision,omitempty"`
	DecidedAt string             `json:"decided_at,omitempty"`
	Message   string             `json:"message,omitempty"`
	Code      string             `json:"code,omitempty"`
	Approval  *approval.Approval `json:"approval,omitempty"`
}

// totpBlocks reports whether approving rec needs a TOTP code now, so a
// bulk approval must refuse it (codes are one per decision).
func (s *Server) totpBlocks(c context.Context, recs []*approval.Approval) (bool, error) {
	need := false
	for _, r := range recs {
		need = need || (r.Pending() && r.SecondFactorRequired)
	}
	if !need {
		return false, nil
	}
	st, err := s.deps.Approvals.TOTPStatus(c)
	if err != nil {
		return false, err
	}
	return st.Enforced, nil
}

// decideEach decides recs one by one; a failure is that item's error.
func (s *Server) decideEach(ctx *fasthttp.RequestCtx, ids []string, approve bool, reason string) []batchResult {
	out := make([]batchResult, 0, len(ids))
	for _, id := range ids {
		rec, err := s.deps.Approvals.Decide(s.reqCtxWait(ctx), approval.Decide{ID: id, Approve: approve, Reason: reason, By: decider(ctx)})
		if err != nil {
			// Only a domain error's message is shown; anything else
			// stays in the log, as writeError does.
			res := batchResult{ID: id, Status: "error", Code: "internal_error", Message: "internal server error"}
			if de := kernel.AsError(err); de != nil {
				res.Code, res.Message = de.Code, de.Msg
			}
			out = append(out, res)
			continue
		}
		d := lfDecision[rec.Status]
		at := ""
		if rec.DecidedAt != nil {
			at = rec.DecidedAt.UTC().Format("2006-01-02T15:04:05.999999999Z07:00")
		}
		out = append(out, batchResult{ID: id, Status: "ok", Decision: d, DecidedAt: at, Approval: rec})
	}
	return out
}

// batchApprovals serves POST /api/approvals/batch {"ids", "decision":
// "approve"|"reject"}: 200 when every item was decided, 207 when some
// were not (each result says why). Approving is refused as a whole when an
// item needs a TOTP code.
func (s *Server) batchApprovals(ctx *fasthttp.RequestCtx) error {
	var b batchBody
	if err := decodeJSON(ctx, &b); err != nil {
		return err
	}
	if len(b.IDs) == 0 {
		return badRequest("invalid_input", "ids must list at least one approval id")
	}
	if len(b.IDs) > MaxApprovalBatch {
		return badRequest("invalid_input", fmt.Sprintf("ids lists %d approvals; at most %d per batch", len(b.IDs), MaxApprovalBatch))
	}
	var approve bool
	switch b.Decision {
	case "approve":
		approve = true
	case "reject":
	default:
		return badRequest("invalid_input", fmt.Sprintf("invalid decision %q: expected \"approve\" or \"reject\"", truncateText(b.Decision, 40)))
	}
	if len([]rune(b.Reason)) > approval.MaxReason {
		return badRequest("invalid_input", fmt.Sprintf("reason has more than %d characters", approval.MaxReason))
	}
	var results []batchResult
	var valid []string
	for _, raw := range b.IDs {
		ctx.SetUserValue("id", raw)
		id, err := approvalID(ctx)
		if err != nil {
			results = append(results, batchResult{ID: truncateText(raw, 80), Status: "error", Code: "invalid_approval_id", Message: "invalid UUID"})
			continue
		}
		valid = append(valid, id)
	}
	ctx.SetUserValue("id", nil)
	if approve {
		var recs []*approval.Approval
		for _, id := range valid {
			if r, err := s.deps.Approvals.Get(s.reqCtx(ctx), id); err == nil {
				recs = append(recs, r)
			}
		}
		blocked, err := s.totpBlocks(s.reqCtx(ctx), recs)
		if err != nil {
			return err
		}
		if blocked {
			return badRequest("totp_required", "batch approval is not available when some items need a TOTP code; approve those one by one")
		}
	}
	results = append(results, s.decideEach(ctx, valid, approve, strings.TrimSpace(b.Reason))...)
	status := fasthttp.StatusOK
	ok := 0
	for _, r := range results {
		if r.Status == "ok" {
			ok++
		} else {
			status = fasthttp.StatusMultiStatus
		}
	}
	auditDetails(ctx, fmt.Sprintf("batch %s: %d of %d approvals decided", b.Decision, ok, len(b.IDs)))
	writeJSON(ctx, status, map[string]any{"results": results})
	return nil
}

// sessionPending reads {sid} and the pending requests of that session.
func (s *Server) sessionPending(ctx *fasthttp.RequestCtx) (string, []*approval.Approval, error) {
	raw, _ := ctx.UserValue("sid").(string)
	sid, err := agent.ParseSessionID(raw)
	if err != nil {
		return "", nil, err
	}
	all, err := s.allApprovals(s.reqCtx(ctx), approval.StatusPending)
	if err != nil {
		return "", nil, err
	}
	var out []*approval.Approval
	for _, a := range all {
		if a.SessionID == sid {
			out = append(out, a)
		}
	}
	return sid, out, nil
}

// sessionApprovals serves GET /api/approvals/session/{sid}: the session's
// pending requests (LibreFang: pending, count, has_pending; fangd: approvals, total).
func (s *Server) sessionApprovals(ctx *fasthttp.RequestCtx) error {
	sid, pending, err := s.sessionPending(ctx)
	if err != nil {
		return err
	}
	if pending == nil {
		pending = []*approval.Approval{}
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"session_id": sid, "pending": pending, "approvals": pending,
		"count": len(pending), "total": len(pending), "has_pending": len(pending) > 0})
	return nil
}

type approveAllBody struct {
	ExpectedCount *int     `json:"expected_count"`
	ExpectedIDs   []string `json:"expected_ids"`
	Reason        string   `json:"reason"`
}

type rejectAllBody struct {
	Reason string `json:"reason"`
}

// sessionApproveAll serves POST /api/approvals/session/{sid}/approve_all
// {expected_count?, expected_ids?}: 409 when the pending set is not what
// the caller saw, 400 when an item needs a TOTP code, else every pending
// request of the session is approved (best effort per item).
func (s *Server) sessionApproveAll(ctx *fasthttp.RequestCtx) error {
	var b approveAllBody
	if err := decodeOptionalJSON(ctx, &b); err != nil {
		return err
	}
	sid, pending, err := s.sessionPending(ctx)
	if err != nil {
		return err
	}
	if b.ExpectedCount != nil && *b.ExpectedCount != len(pending) {
		return &apiError{fasthttp.StatusConflict, "pending_changed",
			fmt.Sprintf("the session has %d pending approvals, not the %d expected; refresh and try again", len(pending), *b.ExpectedCount)}
	}
	if b.ExpectedIDs != nil {
		want := map[string]bool{}
		for _, id := range b.ExpectedIDs {
			want[strings.ToLower(id)] = true
		}
		same := len(want) == len(pending)
		for _, a := range pending {
			same = same && want[a.ID]
		}
		if !same {
			return &apiError{fasthttp.StatusConflict, "pending_changed", "the session's pending approvals are not the expected_ids; refresh and try again"}
		}
	}
	blocked, err := s.totpBlocks(s.reqCtx(ctx), pending)
	if err != nil {
		return err
	}
	if blocked {
		return badRequest("totp_required", "the session has approvals that need a TOTP code; approve those one by one")
	}
	return s.decideSession(ctx, sid, pending, true, b.Reason)
}

// sessionRejectAll serves POST /api/approvals/session/{sid}/reject_all.
func (s *Server) sessionRejectAll(ctx *fasthttp.RequestCtx) error {
	var b rejectAllBody
	if err := decodeOptionalJSON(ctx, &b); err != nil {
		return err
	}
	sid, pending, err := s.sessionPending(ctx)
	if err != nil {
		return err
	}
	return s.decideSession(ctx, sid, pending, false, b.Reason)
}

func (s *Server) decideSession(ctx *fasthttp.RequestCtx, sid string, pending []*approval.Approval, approve bool, reason string) error {
	if len([]rune(reason)) > approval.MaxReason {
		return badRequest("invalid_input", fmt.Sprintf("reason has more than %d characters", approval.MaxReason))
	}
	ids := make([]string, len(pending))
	for i, a := range pending {
		ids[i] = a.ID
	}
	results := s.decideEach(ctx, ids, approve, strings.TrimSpace(reason))
	resolved := 0
	for _, r := range results {
		if r.Status == "ok" {
			resolved++
		}
	}
	decision := "rejected"
	if approve {
		decision = "approved"
	}
	auditDetails(ctx, fmt.Sprintf("session %s: %d of %d pending approvals %s", sid, resolved, len(ids), decision))
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"session_id": sid, "resolved": resolved, "decision": decision, "results": results})
	return nil
}
