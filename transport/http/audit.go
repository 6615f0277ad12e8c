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
	// The entries are already JSON as stored: splice them, don't re-encode.
	size := 32
	for _, e := range rec.Entries {
		size += len(e) + 1
	}
	buf := make([]byte, 0, size)
	buf = append(buf, `{"entries":[`...)
	for i, e := range rec.Entries {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, e...)
	}
	buf = append(buf, `],"total":`...)
	buf = strconv.AppendUint(buf, rec.Total, 10)
	buf = append(buf, "}\n"...)
	ctx.SetContentType("application/json")
	ctx.SetBody(buf)
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
