package http

import (
	"strconv"

	"github.com/valyala/fasthttp"
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
	// The entries are already JSON as stored: splice them into the
	// response's pooled body buffer, don't re-encode or copy them twice.
	resp := &ctx.Response
	resp.ResetBody()
	resp.AppendBodyString(`{"entries":[`)
	for i, e := range rec.Entries {
		if i > 0 {
			resp.AppendBodyString(",")
		}
		resp.AppendBody(e)
	}
	resp.AppendBodyString(`],"total":`)
	var num [20]byte
	resp.AppendBody(strconv.AppendUint(num[:0], rec.Total, 10))
	resp.AppendBodyString("}\n")
	ctx.SetContentType("application/json")
	return nil
}

// auditVerify walks the whole chain. A broken chain is still a 200: the
// request succeeded, its answer is "broken".
func (s *Server) auditVerify(ctx *fasthttp.RequestCtx) error {
	rep, err := s.deps.Audit.Verify()
	if err != nil {
		return err
	}
	writeJSON(ctx, fasthttp.StatusOK, rep)
	return nil
}
