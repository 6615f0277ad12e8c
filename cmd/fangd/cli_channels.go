package main

import (
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/fangd/fangd/actors/channel"
)

func channelsCmd() *cobra.Command {
	o := &clientOptions{}
	cmd := group("channels", "Chat channels: list, status, send a test message", `  fangd channels list --configured
  fangd channels status telegram
  fangd channels test telegram --chat 123456789`,
		channelsListCmd(o), channelsStatusCmd(o), channelsTestCmd(o))
	addClientFlags(cmd, o)
	return cmd
}

type channelPage struct {
	Channels []channel.View `json:"channels"`
	Total    int            `json:"total"`
	Offset   int            `json:"offset"`
	Next     *int           `json:"next_offset"`
}

func channelsListCmd(o *clientOptions) *cobra.Command {
	var (
		configured bool
		p          pageFlags
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List channel adapters and configured channels (GET /api/channels)",
		Example: `  fangd channels list
  fangd channels list --configured --json`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(o)
			if err != nil {
				return err
			}
			q := p.query()
			if configured {
				q.Set("configured", "true")
			}
			var page channelPage
			if printed, err := c.fetch(cmd, request{method: "GET", path: "/api/channels", query: q}, &page); err != nil || printed {
				return err
			}
			return pagedTable(cmd, []string{"NAME", "ADAPTER", "CATEGORY", "CONFIGURED", "ENABLED", "STATUS", "LAST ERROR"}, page.Channels, page.Offset, page.Total, page.Next, func(v channel.View) []string {
				state := "-"
				if v.Configured {
					state = orDash(v.State)
				}
				return []string{v.Name, v.Adapter, v.Category, yesNo(v.Configured), yesNo(v.Enabled), state,
					clip(orDash(v.LastError), 60)}
			})
		},
	}
	cmd.Flags().BoolVar(&configured, "configured", false, "only configured channels")
	p.add(cmd)
	return cmd
}

func channelsStatusCmd(o *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "status [NAME]",
		Short: "How configured channels are doing: state, traffic, outbox, last error",
		Long: `Without NAME: one line per configured channel (GET /api/channels?configured=true).
With NAME: that channel in detail (GET /api/channels/{name}).`,
		Example: `  fangd channels status
  fangd channels status telegram`,
		Args: args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := newClient(o)
			if err != nil {
				return err
			}
			if len(a) == 1 {
				var v channel.View
				if printed, err := c.fetch(cmd, request{method: "GET", path: "/api/channels/" + pathEscape(a[0])}, &v); err != nil || printed {
					return err
				}
				return fields(stdout(cmd), "name", v.Name, "adapter", v.Adapter, "configured", yesNo(v.Configured),
					"enabled", yesNo(v.Enabled), "status", orDash(v.State), "connected since", timeOrDash(v.ConnectedSince),
					"last message", timeOrDash(v.LastMessageAt), "messages in", u64(v.MessagesIn), "messages out", u64(v.MessagesOut),
					"messages failed", u64(v.MessagesFailed), "outbox pending", strconv.Itoa(v.OutboxPending),
					"inbox pending", strconv.Itoa(v.InboxPending), "restarts", u64(v.Restarts),
					"next retry", timeOrDash(v.NextRetryAt), "last error", orDash(v.LastError))
			}
			var page channelPage
			if printed, err := c.fetch(cmd, request{method: "GET", path: "/api/channels", query: map[string][]string{"configured": {"true"}}}, &page); err != nil || printed {
				return err
			}
			if len(page.Channels) == 0 {
				stderr(cmd).Write([]byte("no channel is configured ([channels.<name>] in the config, or POST /api/channels/{name}/configure)\n"))
				return nil
			}
			return tableOf(stdout(cmd), []string{"NAME", "ADAPTER", "STATUS", "CONNECTED", "IN", "OUT", "FAILED", "OUTBOX", "LAST ERROR"}, page.Channels, func(v channel.View) []string {
				return []string{v.Name, v.Adapter, orDash(v.State), timeOrDash(v.ConnectedSince),
					u64(v.MessagesIn), u64(v.MessagesOut), u64(v.MessagesFailed), strconv.Itoa(v.OutboxPending), clip(orDash(v.LastError), 60)}
			})
		},
	}
}

func channelsTestCmd(o *clientOptions) *cobra.Command {
	var chat string
	cmd := &cobra.Command{
		Use:   "test NAME",
		Short: "Check a channel's credentials, or send a test message with --chat (POST /api/channels/{name}/test)",
		Example: `  fangd channels test telegram
  fangd channels test telegram --chat 123456789`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := newClient(o)
			if err != nil {
				return err
			}
			body := map[string]string{}
			if chat != "" {
				body["chat_id"] = chat
			}
			var res channel.TestResult
			if printed, err := c.fetch(cmd, request{method: "POST", path: "/api/channels/" + pathEscape(a[0]) + "/test", body: body}, &res); err != nil || printed {
				return err
			}
			pairs := []string{"channel", res.Channel, "status", res.Status, "message", orDash(res.Message)}
			if res.ChatID != "" {
				pairs = append(pairs, "chat", res.ChatID, "message id", orDash(res.MessageID))
			}
			if res.Identity != nil {
				pairs = append(pairs, "identity", identityString(res.Identity))
			}
			return fields(stdout(cmd), pairs...)
		},
	}
	cmd.Flags().StringVar(&chat, "chat", "", "send a test message to this chat id (default: only check the credentials)")
	return cmd
}

func identityString(id *channel.Identity) string {
	s := id.Name
	if id.DisplayName != "" {
		s += " (" + id.DisplayName + ")"
	}
	if id.ID != "" && id.ID != id.Name {
		s += " id " + id.ID
	}
	return orDash(s)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func u64(n uint64) string { return strconv.FormatUint(n, 10) }

func timeOrDash(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return since(*t)
}
