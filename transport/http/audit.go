package http

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
)

// auditRecent serves GET /api/audit/recent?limit=N (n is accepted too):
// newest first, with the chain's length as total.
//
// A page is a function of the limit and the committed chain (its length
// and tip hash name every entry in it), which changes only when an append
// commits, while the route is polled: the last page built is kept, whole,
// and served as it is (SetBodyRaw: fasthttp writes it from there, no copy
// per request) for as long as the chain's length and tip are the same.
// Copying the ~14 KB of entries into each response's buffer was a third
// of the handler's CPU (BenchmarkHotAuditRecent, docs/bench.md "Session 9:
// ceilings").
func (s *Server) auditRecent(ctx *fasthttp.RequestCtx) error {
	limit, err := intQuery(ctx, 50, 1, 500, "limit", "n")
	if err != nil {
		return err
	}
	// RecentItems reads a ring under a lock and never waits: the server's
	// own context (ended at shutdown) is enough. A per-request one with the
	// request timeout cost 5 of the route's 7 allocations and a timer.
	// With limit 0 it reads only the chain's length and tip (and answers
	// 503 as always when the writer is not running).
	_, total, tip, err := s.deps.Audit.RecentItems(s.baseCtx, 0, nil)
	if err != nil {
		return err
	}
	page := s.recentPage.Load()
	if page == nil || page.limit != limit || page.total != total || page.tip != tip {
		if page, err = s.buildRecentPage(limit); err != nil {
			return err
		}
		s.recentPage.Store(page)
	}
	ctx.Response.SetBodyRaw(page.body)
	ctx.SetContentType("application/json")
	return nil
}

// recentPage is one built answer of GET /api/audit/recent and what it
// was built from. Its body is shared by every response that serves it and
// is never written to after it is built.
type recentPage struct {
	limit int
	total uint64
	tip   string
	body  []byte
}

// buildRecentPage reads the newest limit entries with the chain's length
// and tip at the same moment, and writes the page.
func (s *Server) buildRecentPage(limit int) (*recentPage, error) {
	// Up to 64 items stay on this stack (the default limit is 50).
	var buf [64][]byte
	items, total, tip, err := s.deps.Audit.RecentItems(s.baseCtx, limit, buf[:0])
	if err != nil {
		return nil, err
	}
	return &recentPage{limit: limit, total: total, tip: tip, body: appendRecentBody(nil, items, total, tip, limit)}, nil
}

// appendRecentBody appends the page of items to dst. The entries are
// already JSON as served, LibreFang's names for three fields included
// (audit.RecentReply.Items): they are spliced in twice, as fangd's entries
// and LibreFang's items. Nothing is decoded or encoded.
func appendRecentBody(dst []byte, items [][]byte, total uint64, tip string, limit int) []byte {
	if len(items) == 0 {
		tip = "" // newest first: the first is the chain's tip
	}
	n := 128 + len(tip)
	for _, item := range items {
		n += 2 * (len(item) + 1)
	}
	dst = slices.Grow(dst, n)
	for _, key := range [...]string{`{"entries":[`, `],"items":[`} {
		dst = append(dst, key...)
		for i, item := range items {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, item...)
		}
	}
	dst = append(dst, `],"total":`...)
	dst = strconv.AppendUint(dst, total, 10)
	dst = append(dst, `,"offset":0,"limit":`...)
	dst = strconv.AppendInt(dst, int64(limit), 10)
	dst = append(dst, `,"tip_hash":`...)
	dst = store.AppendJSONString(dst, tip)
	return append(dst, "}\n"...)
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
