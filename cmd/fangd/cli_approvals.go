package main

import (
	"context"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/fangd/fangd/actors/approval"
)

// approvalsPage is the most GET /api/approvals answers at once.
const approvalsPage = 500

func approvalsCmd() *cobra.Command {
	o := &clientOptions{}
	cmd := group("approvals", "List, approve and reject human approvals", `  fangd approvals list
  fangd approvals approve 3f2a --totp 123456
  fangd approvals reject 3f2a --reason "not on a Friday"`,
		approvalsListCmd(o), approvalsDecideCmd(o, true), approvalsDecideCmd(o, false))
	addClientFlags(cmd, o)
	return cmd
}

func approvalsListCmd(o *clientOptions) *cobra.Command {
	var (
		status string
		p      pageFlags
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List approvals, pending ones by default (GET /api/approvals)",
		Long: `List approvals. The ID column shows the first 8 characters of each id; any
prefix that matches one pending approval is accepted by approve and reject.`,
		Example: `  fangd approvals list
  fangd approvals list --status approved --limit 20
  fangd approvals list --json | jq -r '.approvals[].id'`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(o)
			if err != nil {
				return err
			}
			q := p.query()
			if status != "all" {
				q.Set("status", status)
			}
			var page approval.Page
			if printed, err := c.fetch(cmd, request{method: "GET", path: "/api/approvals", query: q}, &page); err != nil || printed {
				return err
			}
			if page.Total == 0 {
				what := status + " "
				if status == "all" {
					what = ""
				}
				fmt.Fprintf(stderr(cmd), "no %sapprovals\n", what)
				return nil
			}
			var next *int
			if end := page.Offset + len(page.Approvals); end < page.Total {
				next = &end
			}
			return pagedTable(cmd, []string{"ID", "AGENT", "ACTION", "RISK", "STATUS", "REQUESTED", "EXPIRES", "DESCRIPTION"}, page.Approvals, page.Offset, page.Total, next, func(a *approval.Approval) []string {
				agent := a.AgentName
				if agent == "" {
					agent = a.AgentID
				}
				expires := "-"
				if a.Status == approval.StatusPending {
					expires = since(a.ExpiresAt)
				}
				tfa := ""
				if a.SecondFactorRequired {
					tfa = " (totp)"
				}
				return []string{shortID(a.ID), agent, a.Action, orDash(a.RiskLevel) + tfa, a.Status,
					since(a.RequestedAt), expires, clip(orDash(a.Description), 60)}
			})
		},
	}
	cmd.Flags().StringVar(&status, "status", approval.StatusPending, "pending, approved, rejected, expired, cancelled, modified, or all")
	p.add(cmd)
	return cmd
}

func approvalsDecideCmd(o *clientOptions, approve bool) *cobra.Command {
	var totp, reason string
	verb, past := "reject", "rejected"
	if approve {
		verb, past = "approve", "approved"
	}
	cmd := &cobra.Command{
		Use:   verb + " ID-PREFIX",
		Short: strings.ToUpper(verb[:1]) + verb[1:] + " a pending approval, named by its id or a unique prefix of it",
		Long: fmt.Sprintf(`%s a pending approval (POST /api/approvals/{id}/%s).

ID-PREFIX is the approval's id or any prefix of it that matches exactly one
pending approval (fangd approvals list shows the first 8 characters). A prefix
that matches several is refused with the matching ids (exit 1), as is one that
matches none.`, strings.ToUpper(verb[:1])+verb[1:], verb),
		Example: fmt.Sprintf("  fangd approvals %s 3f2a9c1e", verb),
		Args:    args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := newClient(o)
			if err != nil {
				return err
			}
			id, err := c.resolveApproval(cmd.Context(), a[0])
			if err != nil {
				return err
			}
			body := map[string]string{}
			if reason != "" {
				body["reason"] = reason
			}
			if totp != "" {
				body["totp_code"] = totp
			}
			var rec approval.Approval
			if printed, err := c.fetch(cmd, request{method: "POST", path: "/api/approvals/" + id + "/" + verb, body: body}, &rec); err != nil || printed {
				return err
			}
			pairs := []string{past, rec.ID, "action", rec.Action, "agent", orDash(rec.AgentName), "status", rec.Status}
			if rec.SecondFactor != "" {
				pairs = append(pairs, "second factor", rec.SecondFactor)
			}
			return fields(stdout(cmd), pairs...)
		},
	}
	if approve {
		cmd.Flags().StringVar(&totp, "totp", "", "TOTP or recovery code, for approvals that need a second factor")
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded with the decision)")
	return cmd
}

// resolveApproval turns an id or id prefix into the one pending approval
// it names. A whole UUID is taken as is (the server says whether it is
// still pending).
func (c *client) resolveApproval(ctx context.Context, prefix string) (string, error) {
	p := strings.ToLower(strings.TrimSpace(prefix))
	if _, err := uuid.Parse(p); err == nil && len(p) == 36 {
		return p, nil
	}
	if p == "" || strings.Trim(p, "0123456789abcdef-") != "" {
		return "", usagef("%q is not an approval id or id prefix (hex digits and dashes)", prefix)
	}
	var matches []*approval.Approval
	for offset := 0; ; {
		q := url.Values{"status": {approval.StatusPending}, "offset": {strconv.Itoa(offset)}, "limit": {strconv.Itoa(approvalsPage)}}
		var page approval.Page
		if _, err := c.get(ctx, "/api/approvals", q, &page); err != nil {
			return "", err
		}
		for _, a := range page.Approvals {
			if strings.HasPrefix(a.ID, p) {
				matches = append(matches, a)
			}
		}
		offset += len(page.Approvals)
		if len(page.Approvals) == 0 || offset >= page.Total {
			break
		}
	}
	switch len(matches) {
	case 1:
		return matches[0].ID, nil
	case 0:
		return "", fmt.Errorf("no pending approval has an id starting with %q (fangd approvals list shows them)", prefix)
	}
	sort.Slice(matches, func(i, j int) bool { return matches[i].ID < matches[j].ID })
	var b strings.Builder
	for i, a := range matches {
		if i == 10 {
			fmt.Fprintf(&b, "\n  ... and %d more", len(matches)-10)
			break
		}
		fmt.Fprintf(&b, "\n  %s  %s  %s", a.ID, a.AgentName, a.Action)
	}
	return "", fmt.Errorf("%q is ambiguous: %d pending approvals have ids starting with it; give more characters:%s",
		prefix, len(matches), b.String())
}
