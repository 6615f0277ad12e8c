package http

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/agent"
	"github.com/fangd/fangd/actors/approval"
	"github.com/fangd/fangd/actors/kernel"
)

// MaxApprovalWait caps ?wait= on GET /api/approvals/{id} (a long poll).
const MaxApprovalWait = 60

// decider is the caller as the approvals domain checks and audits it.
func decider(ctx *fasthttp.RequestCtx) approval.Decider {
	w := who(ctx)
	return approval.Decider{Identity: w.Actor, Via: approval.ViaAPI, SourceIP: w.SourceIP}
}

// decodeOptionalJSON is decodeJSON for endpoints whose body may be
// omitted (approve, reject, setup): an empty body is {}.
func decodeOptionalJSON(ctx *fasthttp.RequestCtx, v any) error {
	if len(bytes.TrimSpace(ctx.PostBody())) == 0 {
		return nil
	}
	return decodeJSON(ctx, v)
}

// approvalID reads {id}: a UUID, or a 400.
func approvalID(ctx *fasthttp.RequestCtx) (string, error) {
	raw, _ := ctx.UserValue("id").(string)
	id, err := uuid.Parse(raw)
	if err != nil || len(raw) != 36 {
		return "", badRequest("invalid_approval_id", fmt.Sprintf("approval id %q is not a UUID", truncateText(raw, 80)))
	}
	return id.String(), nil
}

func truncateText(s string, n int) string {
	if cut, ok := kernel.CutUTF8(s, n); ok {
		return cut + "…"
	}
	return s
}

var approvalStatuses = map[string]bool{"": true, approval.StatusPending: true, approval.StatusApproved: true,
	approval.StatusRejected: true, approval.StatusExpired: true, approval.StatusCancelled: true, approval.StatusModified: true}

// listApprovals serves GET /api/approvals?status=&limit=&offset=: pending
// requests first (oldest first), then recent decisions (newest first).
func (s *Server) listApprovals(ctx *fasthttp.RequestCtx) error {
	status := string(ctx.QueryArgs().Peek("status"))
	if !approvalStatuses[status] {
		return badRequest("invalid_query", fmt.Sprintf("status %q: want pending, approved, rejected, expired or cancelled", truncateText(status, 40)))
	}
	offset, err := intQuery(ctx, 0, 0, 1<<30, "offset")
	if err != nil {
		return err
	}
	limit, err := intQuery(ctx, 50, 1, 500, "limit")
	if err != nil {
		return err
	}
	page, err := s.deps.Approvals.List(s.reqCtx(ctx), status, offset, limit)
	return reply(ctx, page, err)
}

// approvalPolicy serves GET /api/approvals/policy: the policy in force,
// each offered tool with whether its calls wait and why, and the patterns
// that match no tool (unmatched_patterns).
func (s *Server) approvalPolicy(ctx *fasthttp.RequestCtx) error {
	writeJSON(ctx, fasthttp.StatusOK, s.deps.Approvals.Report())
	return nil
}

type createApprovalBody struct {
	AgentID string `json:"agent_id"`
	Action  string `json:"action"`
	// ToolName is LibreFang's name for action; either may be sent.
	ToolName      string          `json:"tool_name"`
	Description   string          `json:"description"`
	ActionSummary string          `json:"action_summary"`
	Payload       json.RawMessage `json:"payload"`
	RiskLevel     string          `json:"risk_level"`
	SessionID     string          `json:"session_id"`
}

// createApproval serves POST /api/approvals: a request from any caller (a
// tool, an external system) on behalf of an agent. 201 once durable.
func (s *Server) createApproval(ctx *fasthttp.RequestCtx) error {
	var b createApprovalBody
	if err := decodeJSON(ctx, &b); err != nil {
		return err
	}
	action := b.Action
	switch {
	case action == "":
		action = b.ToolName
	case b.ToolName != "" && b.ToolName != action:
		return badRequest("invalid_input", "action and tool_name name the same thing; send one (or both equal)")
	}
	if action == "" {
		return badRequest("invalid_input", "action is required (the tool or action name, e.g. \"delete_file\")")
	}
	if b.AgentID == "" {
		return badRequest("invalid_input", "agent_id is required")
	}
	if b.SessionID != "" {
		if _, err := agent.ParseSessionID(b.SessionID); err != nil {
			return err
		}
	}
	ref, err := agent.ParseRef(b.AgentID)
	if err != nil {
		return err
	}
	a, err := s.deps.Agents.Get(s.reqCtx(ctx), ref)
	if err != nil {
		return err
	}
	w := who(ctx)
	rec, err := s.deps.Approvals.Create(s.reqCtx(ctx), approval.Request{AgentID: a.ID, AgentName: a.Name, Action: action,
		Description: b.Description, ActionSummary: b.ActionSummary, Payload: b.Payload, RiskLevel: b.RiskLevel,
		SessionID: b.SessionID, RequestedBy: w.Actor, SourceIP: w.SourceIP})
	if err != nil {
		return err
	}
	auditDetails(ctx, fmt.Sprintf("approval %s requested for agent %s: %s", rec.ID, a.Name, rec.Action))
	writeJSON(ctx, fasthttp.StatusCreated, rec)
	return nil
}

// getApproval serves GET /api/approvals/{id}[?wait=N]: with wait, it
// answers as soon as the request is decided, or with its current state
// after N seconds (at most 60).
func (s *Server) getApproval(ctx *fasthttp.RequestCtx) error {
	id, err := approvalID(ctx)
	if err != nil {
		return err
	}
	wait, err := intQuery(ctx, 0, 0, MaxApprovalWait, "wait")
	if err != nil {
		return err
	}
	var rec *approval.Approval
	if wait == 0 {
		rec, err = s.deps.Approvals.Get(s.reqCtx(ctx), id)
	} else {
		// reqCtxWait ends at shutdown: Wait answers with what it has.
		rec, err = s.deps.Approvals.Wait(s.reqCtxWait(ctx), id, time.Duration(wait)*time.Second)
	}
	if err != nil {
		return err
	}
	writeJSON(ctx, fasthttp.StatusOK, rec)
	return nil
}

type approveBody struct {
	// TOTPCode is a current TOTP code or a recovery code.
	TOTPCode string `json:"totp_code"`
	Reason   string `json:"reason"`
}

type rejectBody struct {
	Reason string `json:"reason"`
}

// approveApproval serves POST /api/approvals/{id}/approve.
func (s *Server) approveApproval(ctx *fasthttp.RequestCtx) error {
	id, err := approvalID(ctx)
	if err != nil {
		return err
	}
	var b approveBody
	if err := decodeOptionalJSON(ctx, &b); err != nil {
		return err
	}
	if len(b.TOTPCode) > 64 {
		return badRequest("totp_invalid", "invalid TOTP or recovery code")
	}
	if len([]rune(b.Reason)) > approval.MaxReason {
		return badRequest("invalid_input", fmt.Sprintf("reason has more than %d characters", approval.MaxReason))
	}
	rec, err := s.deps.Approvals.Decide(s.reqCtxWait(ctx), approval.Decide{ID: id, Approve: true, Code: b.TOTPCode, Reason: b.Reason, By: decider(ctx)})
	if err != nil {
		auditDetails(ctx, "approval "+id+" not approved")
		return err
	}
	auditDetails(ctx, fmt.Sprintf("approval %s approved (second factor: %s)", id, rec.SecondFactor))
	writeJSON(ctx, fasthttp.StatusOK, rec)
	return nil
}

// rejectApproval serves POST /api/approvals/{id}/reject.
func (s *Server) rejectApproval(ctx *fasthttp.RequestCtx) error {
	id, err := approvalID(ctx)
	if err != nil {
		return err
	}
	var b rejectBody
	if err := decodeOptionalJSON(ctx, &b); err != nil {
		return err
	}
	if len([]rune(b.Reason)) > approval.MaxReason {
		return badRequest("invalid_input", fmt.Sprintf("reason has more than %d characters", approval.MaxReason))
	}
	rec, err := s.deps.Approvals.Decide(s.reqCtxWait(ctx), approval.Decide{ID: id, Approve: false, Reason: strings.TrimSpace(b.Reason), By: decider(ctx)})
	if err != nil {
		auditDetails(ctx, "approval "+id+" not rejected")
		return err
	}
	auditDetails(ctx, "approval "+id+" rejected")
	writeJSON(ctx, fasthttp.StatusOK, rec)
	return nil
}

type totpSetupBody struct {
	CurrentCode string `json:"current_code"`
}

type totpCodeBody struct {
	Code string `json:"code"`
}

// totpSetup serves POST /api/approvals/totp/setup. The answer is the only
// time the secret and recovery codes are shown.
func (s *Server) totpSetup(ctx *fasthttp.RequestCtx) error {
	var b totpSetupBody
	if err := decodeOptionalJSON(ctx, &b); err != nil {
		return err
	}
	e, err := s.deps.Approvals.TOTPSetup(s.reqCtx(ctx), b.CurrentCode, decider(ctx))
	return replyAudited(ctx, e, err, func() string { return "TOTP enrolment started (awaiting confirmation)" })
}

func (s *Server) totpConfirm(ctx *fasthttp.RequestCtx) error {
	var b totpCodeBody
	if err := decodeJSON(ctx, &b); err != nil {
		return err
	}
	if strings.TrimSpace(b.Code) == "" {
		return badRequest("totp_required", "code is required: the 6-digit code your authenticator app shows")
	}
	r, err := s.deps.Approvals.TOTPConfirm(s.reqCtx(ctx), b.Code, decider(ctx))
	return replyAudited(ctx, r, err, func() string { return "TOTP enrolment confirmed" })
}

func (s *Server) totpStatus(ctx *fasthttp.RequestCtx) error {
	st, err := s.deps.Approvals.TOTPStatus(s.reqCtx(ctx))
	return reply(ctx, st, err)
}

// totpCancel serves DELETE /api/approvals/totp/setup: it drops an
// enrolment awaiting confirmation (whose setup answer may have been lost)
// without a code; a confirmed enrolment is untouched.
func (s *Server) totpCancel(ctx *fasthttp.RequestCtx) error {
	r, err := s.deps.Approvals.TOTPCancel(s.reqCtx(ctx), decider(ctx))
	return replyAudited(ctx, r, err, func() string { return "TOTP enrolment awaiting confirmation cancelled" })
}

// totpRevoke serves DELETE /api/approvals/totp (and LibreFang's
// POST /api/approvals/totp/revoke).
func (s *Server) totpRevoke(ctx *fasthttp.RequestCtx) error {
	var b totpCodeBody
	if err := decodeJSON(ctx, &b); err != nil {
		return err
	}
	r, err := s.deps.Approvals.TOTPRevoke(s.reqCtx(ctx), b.Code, decider(ctx))
	return replyAudited(ctx, r, err, func() string { return "TOTP enrolment revoked" })
}

// needApprovals answers 503 when the daemon runs without the approvals
// subsystem (only tests build such a server).
func (s *Server) needApprovals(h handlerFunc) handlerFunc {
	return func(ctx *fasthttp.RequestCtx) error {
		if s.deps.Approvals == nil {
			return &apiError{fasthttp.StatusServiceUnavailable, "approvals_unavailable", "approvals are not running"}
		}
		return h(ctx)
	}
}
