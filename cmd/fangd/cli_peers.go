package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/spf13/cobra"
)

// peerView is one OFP peer of GET /api/peers, as far as the table shows
// it (the peer actors live on another branch; --json has every field).
type peerView struct {
	NodeID        string            `json:"node_id"`
	NodeName      string            `json:"node_name"`
	Address       string            `json:"address"`
	State         string            `json:"state"`
	Authenticated bool              `json:"authenticated"`
	LastSeen      string            `json:"last_seen"`
	Agents        []json.RawMessage `json:"agents"`
	LinkMode      string            `json:"link_mode"`
}

func peersCmd() *cobra.Command {
	o := &clientOptions{}
	var p pageFlags
	list := &cobra.Command{
		Use:   "list",
		Short: "List the OFP peers of the daemon's peer network (GET /api/peers)",
		Long: `List the peers the daemon's OFP network knows. A daemon built without the peer
network answers 404 on /api/peers: that is said plainly (exit 1).`,
		Example: `  fangd peers list
  fangd peers list --json | jq -r '.items[].node_name'`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(o)
			if err != nil {
				return err
			}
			var page struct {
				Items  []peerView `json:"items"`
				Total  int        `json:"total"`
				Offset int        `json:"offset"`
				Next   *int       `json:"next_offset"`
			}
			raw, err := c.get(cmd.Context(), "/api/peers", p.query(), &page)
			var se *serverError
			if errors.As(err, &se) && se.Status == http.StatusNotFound {
				return fmt.Errorf("the server at %s has no peer network: GET /api/peers answered 404 (this fangd has no OFP peer support)", c.base)
			}
			if err != nil {
				return err
			}
			if c.json {
				printRaw(stdout(cmd), raw)
				return nil
			}
			if page.Total == 0 {
				fmt.Fprintln(stderr(cmd), "no peers (is [network] enabled in the daemon's config? see docs/ofp.md)")
				return nil
			}
			rows := make([][]string, 0, len(page.Items))
			for _, pv := range page.Items {
				rows = append(rows, []string{orDash(pv.NodeName), pv.NodeID, orDash(pv.Address), pv.State, yesNo(pv.Authenticated),
					orDash(pv.LinkMode), strconv.Itoa(len(pv.Agents)), orDash(pv.LastSeen)})
			}
			if err := table(stdout(cmd), []string{"NAME", "NODE ID", "ADDRESS", "STATE", "AUTH", "LINK", "AGENTS", "LAST SEEN"}, rows); err != nil {
				return err
			}
			pageNote(stderr(cmd), len(page.Items), page.Offset, page.Total, page.Next)
			return nil
		},
	}
	p.add(list)
	cmd := group("peers", "The OFP peer network's peers", "  fangd peers list", list)
	addClientFlags(cmd, o)
	return cmd
}
