package main

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/spf13/cobra"

	ofppeer "github.com/fangd/fangd/actors/peer"
)

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
			var page struct {
				Items  []ofppeer.PeerInfo `json:"items"`
				Total  int                `json:"total"`
				Offset int                `json:"offset"`
				Next   *int               `json:"next_offset"`
			}
			c, printed, err := getPage(cmd, o, "/api/peers", &p, &page)
			var se *serverError
			if errors.As(err, &se) && se.Status == http.StatusNotFound {
				return fmt.Errorf("the server at %s has no peer network: GET /api/peers answered 404 (this fangd has no OFP peer support)", c.base)
			}
			if err != nil || printed {
				return err
			}
			if page.Total == 0 {
				var st struct {
					Enabled bool `json:"enabled"`
				}
				if _, err := c.get(cmd.Context(), "/api/network/status", nil, &st); err == nil && !st.Enabled {
					fmt.Fprintln(stderr(cmd), "no peers: the daemon's peer network is off ([network] in its config; docs/ofp.md)")
				} else {
					fmt.Fprintln(stderr(cmd), "no peers connected or known")
				}
				return nil
			}
			return pagedTable(cmd, []string{"NAME", "NODE ID", "ADDRESS", "STATE", "AUTH", "LINK", "AGENTS", "LAST SEEN"}, page.Items, page.Offset, page.Total, page.Next, func(pv ofppeer.PeerInfo) []string {
				return []string{orDash(pv.NodeName), pv.NodeID, orDash(pv.Address), pv.State, yesNo(pv.Authenticated),
					orDash(pv.LinkMode), strconv.Itoa(len(pv.Agents)), orDash(pv.LastSeen)}
			})
		},
	}
	p.add(list)
	cmd := group("peers", "The OFP peer network's peers", "  fangd peers list", list)
	addClientFlags(cmd, o)
	return cmd
}
