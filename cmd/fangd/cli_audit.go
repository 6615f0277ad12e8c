package main

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/fangd/fangd/actors/audit"
)

// The audit verbs split on where the chain is read: --home (or --offline)
// opens a stopped daemon's store, as `fangd audit verify --home` always
// did; without them verify asks the running daemon. accept is offline
// only (a running degraded daemon takes POST /api/audit/accept); export
// is online only.
func auditCmd() *cobra.Command {
	return group("audit", "Verify and export the audit chain; accept an anchor mismatch", `  fangd audit verify                 # ask the running daemon
  fangd audit verify --home ~/.fangd # a stopped daemon's store
  fangd audit export --format jsonl --out audit.jsonl`,
		auditVerifyCmd(), auditAcceptCmd(), auditExportCmd())
}

func auditVerifyCmd() *cobra.Command {
	o := &clientOptions{}
	var (
		off     auditVerifyCommand
		offline bool
	)
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Verify the audit chain: the running daemon's, or a stopped one's with --home (exit 1 when broken)",
		Long: `Walk the whole audit chain and check every hash link and the anchor.

Online (the default): asks the running daemon (GET /api/audit/verify).
Offline (--home DIR, or --offline for $FANGD_HOME or ~/.fangd): opens a stopped
daemon's store directly and prints the report as JSON; a running daemon holds
its home's lock, so offline verification of it is refused.

Either way the exit code is 1 when the chain is broken.`,
		Example: `  fangd audit verify
  fangd audit verify --json
  fangd audit verify --home /var/lib/fangd`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if off.home != "" || offline {
				for _, f := range []string{"url", "api-key", "config", "json", "timeout"} {
					if cmd.Flags().Changed(f) {
						return usagef("--%s asks a running daemon; --home and --offline read a stopped one's store: give one or the other", f)
					}
				}
				return off.Run(cmd.Context())
			}
			c, err := newClient(o)
			if err != nil {
				return err
			}
			var rep audit.Report
			printed, err := c.fetch(cmd, request{method: "GET", path: "/api/audit/verify"}, &rep)
			if err != nil {
				return err
			}
			if !printed {
				pairs := []string{"status", rep.Status, "chain length", u64(rep.ChainLength), "anchor", rep.AnchorStatus,
					"tip hash", orDash(rep.TipHash), "first entry", strOrDash(rep.FirstEntry), "last entry", strOrDash(rep.LastEntry)}
				if rep.TrimmedLength > 0 {
					pairs = append(pairs, "trimmed", u64(rep.TrimmedLength))
				}
				if rep.BrokenAt > 0 {
					pairs = append(pairs, "broken at", u64(rep.BrokenAt))
				}
				if rep.Error != "" {
					pairs = append(pairs, "error", rep.Error)
				}
				if rep.StartupMismatch != "" {
					pairs = append(pairs, "startup mismatch", rep.StartupMismatch)
				}
				if err := fields(stdout(cmd), pairs...); err != nil {
					return err
				}
			}
			if !rep.Valid() {
				return exitError(exitRefused)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&off.home, "home", "", "verify this stopped daemon's home offline")
	cmd.Flags().BoolVar(&offline, "offline", false, "verify offline, the home being $FANGD_HOME or ~/.fangd")
	addClientFlags(cmd, o)
	return cmd
}

func auditAcceptCmd() *cobra.Command {
	c := &auditAcceptCommand{}
	cmd := &cobra.Command{
		Use:   "accept",
		Short: "Record an audit anchor mismatch and re-anchor (daemon stopped)",
		Long: `Record an audit anchor mismatch in a stopped daemon's audit log and re-anchor,
so that fangd starts again with the break on the record. A running daemon that
started degraded takes POST /api/audit/accept instead.`,
		Example: `  fangd audit accept --reason "restored from backup, tail lost" --home /var/lib/fangd`,
		Args:    args(cobra.NoArgs),
		RunE:    func(cmd *cobra.Command, _ []string) error { return c.Run(cmd.Context()) },
	}
	cmd.Flags().StringVar(&c.home, "home", "", "home directory (default $FANGD_HOME or ~/.fangd)")
	cmd.Flags().StringVar(&c.reason, "reason", "", "why the mismatch is accepted (required; recorded in the audit log)")
	return cmd
}

func auditExportCmd() *cobra.Command {
	o := &clientOptions{}
	var (
		format, out, order                   string
		from, to, action, agent, user, outcm string
		limit                                int
	)
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Export audit entries from the running daemon (GET /api/audit/export)",
		Long: `Stream audit entries as JSON (an array, the default), JSON lines or CSV, newest
first unless --order asc, to stdout or --out FILE (written 0600, refused if it
exists). The filters are the API's: --action, --agent, --user, --outcome, and
--from/--to as RFC 3339 times.`,
		Example: `  fangd audit export --format jsonl --out audit.jsonl
  fangd audit export --format csv --action agent_spawned --from 2026-12-01T00:00:00Z`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(o)
			if err != nil {
				return err
			}
			q := url.Values{}
			for k, v := range map[string]string{"format": format, "order": order, "from": from, "to": to,
				"action": action, "agent": agent, "user": user, "outcome": outcm} {
				if v != "" {
					q.Set(k, v)
				}
			}
			if limit > 0 {
				q.Set("limit", strconv.Itoa(limit))
			}
			var w io.Writer = stdout(cmd)
			var f *os.File
			if out != "" {
				if f, err = os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
					return usagef("--out: %v", err)
				}
				w = f
			}
			err = c.export(cmd, q, w)
			if f != nil {
				if cerr := f.Close(); err == nil {
					err = cerr
				}
				if err != nil {
					os.Remove(out) // a partial export is not an export
				} else {
					fmt.Fprintf(stderr(cmd), "fangd: wrote %s\n", out)
				}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&format, "format", "", "json (default), jsonl or csv")
	f.StringVar(&out, "out", "", "write to this new file instead of stdout")
	f.StringVar(&order, "order", "", "desc (newest first, default) or asc")
	f.StringVar(&from, "from", "", "entries at or after this RFC 3339 time")
	f.StringVar(&to, "to", "", "entries at or before this RFC 3339 time")
	f.StringVar(&action, "action", "", "only this action (event type)")
	f.StringVar(&agent, "agent", "", "only this agent id")
	f.StringVar(&user, "user", "", "only this actor")
	f.StringVar(&outcm, "outcome", "", "only this outcome (ok, denied, error)")
	f.IntVar(&limit, "limit", 0, "at most this many entries (default: the server's)")
	addClientFlags(cmd, o)
	return cmd
}

func (c *client) export(cmd *cobra.Command, q url.Values, w io.Writer) error {
	resp, cancel, err := c.send(cmd.Context(), request{method: "GET", path: "/api/audit/export", query: q, unbounded: true})
	if err != nil {
		return err
	}
	defer cancel()
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return err // writing the file failed
		}
		return &unreachableError{base: c.base.String(), from: c.from, err: fmt.Errorf("the export was cut: %w", err)}
	}
	return nil
}
