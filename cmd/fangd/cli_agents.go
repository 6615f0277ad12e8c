package main

import (
	"fmt"
	"net/url"
	"os"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/fangd/fangd/actors/agent"
)

// pageFlags are ?offset=&limit= of a list endpoint (0: the server's default).
type pageFlags struct{ offset, limit int }

func (p *pageFlags) add(cmd *cobra.Command) {
	cmd.Flags().IntVar(&p.offset, "offset", 0, "skip this many items")
	cmd.Flags().IntVar(&p.limit, "limit", 0, "at most this many items (default: the server's page size)")
}

func (p *pageFlags) query() url.Values {
	q := url.Values{}
	if p.offset > 0 {
		q.Set("offset", strconv.Itoa(p.offset))
	}
	if p.limit > 0 {
		q.Set("limit", strconv.Itoa(p.limit))
	}
	return q
}

func agentsCmd() *cobra.Command {
	o := &clientOptions{}
	cmd := group("agents", "List, create and delete agents", `  fangd agents list
  fangd agents create ops --model groq/llama-3.3-70b-versatile --system-prompt "You run ops."
  fangd agents delete ops`,
		agentsListCmd(o), agentsCreateCmd(o), agentsDeleteCmd(o))
	addClientFlags(cmd, o)
	return cmd
}

func agentsListCmd(o *clientOptions) *cobra.Command {
	var p pageFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List agents, oldest first (GET /api/agents)",
		Example: `  fangd agents list
  fangd agents list --json | jq -r '.items[].name'`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var page struct {
				Items  []agent.Agent `json:"items"`
				Total  int           `json:"total"`
				Offset int           `json:"offset"`
				Next   *int          `json:"next_offset"`
			}
			if _, printed, err := getPage(cmd, o, "/api/agents", &p, &page); err != nil || printed {
				return err
			}
			if page.Total == 0 {
				fmt.Fprintln(stderr(cmd), "no agents yet: fangd agents create NAME --model PROVIDER/MODEL")
				return nil
			}
			return pagedTable(cmd, []string{"NAME", "ID", "MODEL", "STATE", "CREATED"}, page.Items, page.Offset, page.Total, page.Next, func(a agent.Agent) []string {
				return []string{a.Name, a.ID, orDash(a.Model), a.State, since(a.CreatedAt)}
			})
		},
	}
	p.add(cmd)
	return cmd
}

func agentsCreateCmd(o *clientOptions) *cobra.Command {
	var (
		spec               agent.Spec
		maxTokens          int
		template, manifest string
	)
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create an agent (POST /api/agents)",
		Long: `Create an agent from flags, from one of the server's templates (--template),
or from a LibreFang agent manifest file (--manifest; "-" reads stdin). With a
template or a manifest only --model may be given besides the name.`,
		Example: `  fangd agents create ops --model groq/llama-3.3-70b-versatile
  fangd agents create helper --template assistant
  fangd agents create coder --manifest ./coder.toml`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			spec.Name = a[0]
			if cmd.Flags().Changed("max-tokens") {
				spec.MaxTokens = &maxTokens
			}
			body := map[string]any{}
			switch {
			case template != "" && manifest != "":
				return usagef("--template and --manifest: give one")
			case template != "" || manifest != "":
				for _, f := range []string{"description", "system-prompt", "max-tokens", "tag", "tool", "channel", "mcp-server"} {
					if cmd.Flags().Changed(f) {
						return usagef("--%s cannot be combined with --template or --manifest: set it in the manifest", f)
					}
				}
				body["name"] = spec.Name
				if spec.Model != "" {
					body["model"] = spec.Model
				}
				if template != "" {
					body["template"] = template
				} else {
					raw, err := readFileArg(manifest)
					if err != nil {
						return err
					}
					body["manifest_toml"] = string(raw)
				}
			}
			c, err := newClient(o)
			if err != nil {
				return err
			}
			var req any = spec
			if len(body) > 0 {
				req = body
			}
			raw, err := c.call(cmd.Context(), request{method: "POST", path: "/api/agents", body: req})
			if err != nil {
				return err
			}
			var created agent.Agent
			if err := decodeAnswer(raw, &created); err != nil {
				return err
			}
			for _, w := range created.Warnings {
				fmt.Fprintln(stderr(cmd), "fangd: warning:", w)
			}
			if c.json {
				printRaw(stdout(cmd), raw)
				return nil
			}
			return fields(stdout(cmd), "created", created.Name, "id", created.ID, "model", created.Model,
				"state", created.State, "session", created.DefaultSessionID)
		},
	}
	f := cmd.Flags()
	f.StringVar(&spec.Model, "model", "", `"<provider>/<model id>" (default: the server's [default_model])`)
	f.StringVar(&spec.Description, "description", "", "what the agent is for")
	f.StringVar(&spec.SystemPrompt, "system-prompt", "", "the agent's system prompt")
	f.IntVar(&maxTokens, "max-tokens", 0, "output tokens per turn")
	f.StringSliceVar(&spec.Tags, "tag", nil, "a tag (repeat or comma-separate)")
	f.StringSliceVar(&spec.Tools, "tool", nil, "a tool the agent may call (repeat or comma-separate)")
	f.StringSliceVar(&spec.Channels, "channel", nil, "a channel whose messages it answers (default all)")
	f.StringSliceVar(&spec.MCPServers, "mcp-server", nil, "an MCP server whose tools it is offered (default all)")
	f.StringVar(&template, "template", "", "create from this server template (fangd agents create NAME --template assistant)")
	f.StringVar(&manifest, "manifest", "", `create from this LibreFang manifest file ("-" for stdin)`)
	return cmd
}

func agentsDeleteCmd(o *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME|ID",
		Aliases: []string{"rm"},
		Short:   "Delete an agent (DELETE /api/agents/{id}); its pending approvals are cancelled",
		Example: `  fangd agents delete ops`,
		Args:    args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := newClient(o)
			if err != nil {
				return err
			}
			if _, err := c.call(cmd.Context(), request{method: "DELETE", path: "/api/agents/" + pathEscape(a[0])}); err != nil {
				return err
			}
			if c.json {
				// 204 has no body: say what happened in JSON all the same.
				printJSONLine(stdout(cmd), map[string]string{"deleted": a[0]})
				return nil
			}
			fmt.Fprintln(stdout(cmd), "deleted", a[0])
			return nil
		},
	}
}

// readFileArg reads a file named on the command line, "-" for stdin.
func readFileArg(path string) ([]byte, error) {
	if path == "-" {
		return readAllStdin()
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, usagef("%v", err)
	}
	return raw, nil
}
