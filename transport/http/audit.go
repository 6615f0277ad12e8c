package http

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
)

// auditRecent serves GET /api/audit/recent?limit=N (n is accepted too):
// newest first, with the chain's length as total.
func (s *Server) auditRecent(ctx *fasthttp.RequestCtx) error {
	limit, err := intQuery(ctx, 50, 1, 500, "limit", "n")
	if err != nil {
		return err
	}
	// Up to 64 items stay on this stack (the default limit is 50).
	var buf [64][]byte
	// RecentItems reads a ring under a lock and never waits: the server's
	// own context (ended at shutdown) is enough. A per-request one with the
	// request timeout cost 5 of the route's 7 allocations and a timer.
	items, total, tip, err := s.deps.Audit.RecentItems(s.baseCtx, limit, buf[:0])
	if err != nil {
		return err
	}
	// The entries are already JSON as served, LibreFang's names for three
	// fields included (audit.RecentReply.Items): splice them into the
	// response's pooled body buffer, twice, as fangd's entries and
	// LibreFang's items. Nothing is decoded or encoded per request.
	if len(items) == 0 {
		tip = "" // newest first: the first is the chain's tip
	}
	resp := &ctx.Response
	resp.ResetBody()
	for _, key := range [...]string{`{"entries":[`, `],"items":[`} {
		resp.AppendBodyString(key)
		for i, item := range items {
			if i > 0 {
				resp.AppendBodyString(",")
			}
			resp.AppendBody(item)
		}
	}
	resp.AppendBodyString(`],"total":`)
	// Room for the tip hash's quoted hex too: strconv.AppendQuote into a
	// 20-byte array allocated (and checked each rune for printability,
	// a tenth of the request's CPU); the tip is a JSON string like any.
	var num [96]byte
	resp.AppendBody(strconv.AppendUint(num[:0], total, 10))
	resp.AppendBodyString(`,"offset":0,"limit":`)
	resp.AppendBody(strconv.AppendInt(num[:0], int64(limit), 10))
	resp.AppendBodyString(`,"tip_hash":`)
	resp.AppendBody(store.AppendJSONString(num[:0], tip))
	resp.AppendBodyString("}\n")
	ctx.SetContentType("application/json")
	return nil
}

// verifyReport is the chain check with LibreFang's names alongside:
// valid (status == "valid") and entries (the chain's length).
type verifyReport struct {
	audit.Report
	Valid   bool   `json:"valid"`
	Entries uint64 `json:"entries"`
}

// auditVerify walks the whole chain. A broken chain is still a 200: the
// request succeeded, its answer is "broken".
func (s *Server) auditVerify(ctx *fasthttp.RequestCtx) error {
	rep, err := s.deps.Audit.Verify(s.reqCtx(ctx))
	if err != nil {
		return err
	}
	writeJSON(ctx, fasthttp.StatusOK, verifyReport{Report: rep, Valid: rep.Valid(), Entries: rep.ChainLength})
	return nil
}

// auditAccept serves POST /api/audit/accept {"reason": "..."}: what
// `fangd audit accept` does for a stopped daemon, for one running degraded
// (on_anchor_mismatch = "degraded"). It appends the same
// audit_anchor_accepted entry, and re-anchors once that entry is durable;
// verify then reads valid and health ok. 409 nothing_to_accept when the
// anchor matched.
func (s *Server) auditAccept(ctx *fasthttp.RequestCtx) error {
	var body struct {
		Reason string `json:"reason"`
	}
	if err := decodeJSON(ctx, &body); err != nil {
		return err
	}
	reason := strings.TrimSpace(body.Reason)
	if reason == "" {
		return kernel.Invalid("reason is required: it is recorded in the audit log")
	}
	if len(reason) > maxAcceptReason {
		return kernel.Invalid("reason is longer than %d bytes", maxAcceptReason)
	}
	actor, _ := ctx.UserValue(userActor).(string)
	c, cancel := context.WithTimeout(s.reqCtxWait(ctx), audit.AppendTimeout)
	defer cancel()
	e, err := s.deps.Audit.Accept(c, reason, actor, clientIP(ctx).String())
	if err != nil {
		return err
	}
	auditDetails(ctx, fmt.Sprintf("audit anchor mismatch accepted as entry %d", e.ID))
	writeJSON(ctx, fasthttp.StatusOK, e)
	return nil
}

// maxAcceptReason bounds the reason an acceptance records.
const maxAcceptReason = 2000
