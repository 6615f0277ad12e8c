package http

import (
	"bufio"
	"fmt"

	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/transport/sse"
)

// adminBackup serves GET /api/admin/backup: a consistent snapshot of the
// whole store, streamed in fangd's backup format (store.Backup; its header
// carries the snapshot's audit anchor), for `fangd backup` against a
// running daemon. Secrets in it stay encrypted with the vault key, which
// is not in it. Only the API key (or loopback, without one) may take it:
// it is the daemon's whole state. Taking one is audited, and the entry is
// in the backup itself.
func (s *Server) adminBackup(ctx *fasthttp.RequestCtx) error {
	if m := s.deps.Audit.Broken(); m != nil {
		return kernel.Errorf(kernel.KindConflict, "audit_anchor_mismatch",
			"the audit anchor mismatch found at start-up is not accepted (%s): a backup would anchor the broken chain as whole; "+
				"accept it first (POST /api/audit/accept)", m.Error())
	}
	ctx.SetContentType("application/octet-stream")
	ctx.Response.Header.Set("Content-Disposition", `attachment; filename="fangd.backup"`)
	if ctx.IsHead() {
		return nil
	}
	actor, _ := ctx.UserValue(userActor).(string)
	if err := s.appendAudit(audit.Event{EventType: "backup_taken", Actor: actor, SourceIP: clientIP(ctx).String(),
		Details: "GET /api/admin/backup: a backup of the whole store was streamed"}); err != nil {
		return err
	}
	db, version, conn, timeout, log := s.deps.Store, s.cfg.Version, ctx.Conn(), s.cfg.StreamWriteTimeout, s.log
	ctx.SetBodyStreamWriter(func(bw *bufio.Writer) {
		w := &deadlineWriter{w: bw, d: sse.NewDeadline(conn, timeout)}
		h, n, err := audit.Backup(db, w, version)
		if err == nil {
			err = bw.Flush()
		}
		if err != nil {
			// The status is sent; the client sees a file without its end
			// record, which every reader refuses.
			log.Error().Err(err).Msg("backup stream failed")
			return
		}
		log.Info().Int64("records", n).Str("audit_anchor", fmt.Sprint(h.Anchor())).Msg("backup streamed")
	})
	return nil
}

// deadlineWriter gives each write of a long response the whole stream
// write timeout (sse.Deadline).
type deadlineWriter struct {
	w *bufio.Writer
	d *sse.Deadline
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	d.d.Extend()
	return d.w.Write(p)
}
