package http

import (
	"strconv"

	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/audit"
)

// auditRecent serves GET /api/audit/recent?limit=N (n is accepted too):
// newest first, with the chain's length as total.
func (s *Server) auditRecent(ctx *fasthttp.RequestCtx) error {
	limit, err := intQuery(ctx, 50, 1, 500, "limit", "n")
	if err != nil {
		return err
	}
	rec, err := s.deps.Audit.Recent(limit)
	if err != nil {
		return err
	}
	// The entries are already JSON as served, LibreFang's names for three
	// fields included (audit.RecentReply.Items): splice them into the
	// response's pooled body buffer, twice, as fangd's entries and
	// LibreFang's items. Nothing is decoded or encoded per request.
	tip := ""
	if len(rec.Items) > 0 {
		tip = rec.Tip // newest first: the first is the chain's tip
	}
	resp := &ctx.Response
	resp.ResetBody()
	for _, key := range [...]string{`{"entries":[`, `],"items":[`} {
		resp.AppendBodyString(key)
		for i, item := range rec.Items {
			if i > 0 {
				resp.AppendBodyString(",")
			}
			resp.AppendBody(item)
		}
	}
	resp.AppendBodyString(`],"total":`)
	var num [20]byte
	resp.AppendBody(strconv.AppendUint(num[:0], rec.Total, 10))
	resp.AppendBodyString(`,"offset":0,"limit":`)
	resp.AppendBody(strconv.AppendInt(num[:0], int64(limit), 10))
	resp.AppendBodyString(`,"tip_hash":`)
	resp.AppendBody(strconv.AppendQuote(num[:0], tip))
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
	rep, err := s.deps.Audit.Verify()
	if err != nil {
		return err
	}
	writeJSON(ctx, fasthttp.StatusOK, verifyReport{Report: rep, Valid: rep.Valid(), Entries: rep.ChainLength})
	return nil
}
