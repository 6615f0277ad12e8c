package main

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/fangd/fangd/actors/mcp"
)

func mcpCmd() *cobra.Command {
	o := &clientOptions{}
	cmd := group("mcp", "MCP servers fangd connects to: list and health", `  fangd mcp list
  fangd mcp health`, mcpListCmd(o), mcpHealthCmd(o))
	addClientFlags(cmd, o)
	return cmd
}

func mcpListCmd(o *clientOptions) *cobra.Command {
	var p pageFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List MCP servers with their status and tool counts (GET /api/mcp/servers)",
		Example: `  fangd mcp list
  fangd mcp list --json | jq -r '.servers[] | select(.connected | not) | .name'`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var page struct {
				Servers []mcp.ServerView `json:"servers"`
				Total   int              `json:"total"`
				Offset  int              `json:"offset"`
				Next    *int             `json:"next_offset"`
			}
			if _, printed, err := getPage(cmd, o, "/api/mcp/servers", &p, &page); err != nil || printed {
				return err
			}
			if page.Total == 0 {
				fmt.Fprintln(stderr(cmd), "no MCP servers ([[mcp_servers]] in the config, or POST /api/mcp/servers; docs/mcp.md)")
				return nil
			}
			return pagedTable(cmd, []string{"NAME", "TRANSPORT", "TARGET", "STATUS", "TOOLS", "SOURCE", "LAST ERROR"}, page.Servers, page.Offset, page.Total, page.Next, func(s mcp.ServerView) []string {
				target := s.URL
				if target == "" {
					target = s.Command
				}
				status := s.Status
				if s.Disabled {
					status = "disabled"
				}
				if s.ToolsChanged {
					status += " (tools changed)"
				}
				return []string{s.Name, s.Transport, clip(orDash(target), 40), status, strconv.Itoa(s.ToolCount),
					s.Source, clip(orDash(s.LastError), 60)}
			})
		},
	}
	p.add(cmd)
	return cmd
}

func mcpHealthCmd(o *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "health",
		Short: "Health of every MCP server: overall and per server (GET /api/mcp/health)",
		Long: `Health of the MCP servers: overall "healthy" when every enabled server is
connected, "down" when none is, "degraded" otherwise; then one line per
server. The exit code is 0 whatever the health (use --json and .status in
scripts).`,
		Example: `  fangd mcp health
  fangd mcp health --json | jq -r .status`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(o)
			if err != nil {
				return err
			}
			var h mcp.HealthReply
			if printed, err := c.fetch(cmd, request{method: "GET", path: "/api/mcp/health"}, &h); err != nil || printed {
				return err
			}
			fmt.Fprintf(stdout(cmd), "status: %s (%d servers)\n", h.Status, h.Count)
			if len(h.Health) == 0 {
				return nil
			}
			return tableOf(stdout(cmd), []string{"SERVER", "STATUS", "TOOLS", "FAILURES", "LAST OK", "LAST ERROR"}, h.Health, func(e mcp.HealthEntry) []string {
				status := e.Status
				if e.Reconnecting {
					status += fmt.Sprintf(" (reconnecting, attempt %d)", e.ReconnectAttempts)
				}
				return []string{e.ID, status, strconv.Itoa(e.ToolCount), strconv.Itoa(e.ConsecutiveFailures),
					strOrDash(e.LastOK), clip(strOrDash(e.LastError), 60)}
			})
		},
	}
}

func strOrDash(s *string) string {
	if s == nil {
		return "-"
	}
	return orDash(*s)
}
