package comms

import (
	"context"
	"strings"
)

// Topology is GET /api/comms/topology: the known nodes and the routes
// observed between them.
type Topology struct {
	Nodes []Node `json:"nodes"`
	Edges []Edge `json:"edges"`
}

// Topology lists agents and every registered node source, and the edges
// the bus counted from message.routed events in its retained log. An edge
// end that is no known node (a hook, "system", a caller's own name) is
// listed as a node of kind "external", so every edge has both ends.
func (r *Router) Topology(ctx context.Context) (*Topology, error) {
	edges, err := r.opts.Bus.Edges(ctx)
	if err != nil {
		return nil, err
	}
	t := &Topology{Nodes: []Node{}, Edges: edges}
	seen := map[string]bool{}
	if r.opts.Agents != nil {
		agents, err := r.opts.Agents.List(ctx)
		if err != nil {
			return nil, err
		}
		for _, a := range agents {
			n := Node{ID: "agent:" + a.ID, Kind: "agent", Name: a.Name, State: a.State, Model: a.Model}
			t.Nodes = append(t.Nodes, n)
			seen[n.ID] = true
		}
	}
	for _, src := range r.nodes {
		nodes, err := src.Nodes(ctx)
		if err != nil {
			return nil, err
		}
		for _, n := range nodes {
			if !seen[n.ID] {
				t.Nodes = append(t.Nodes, n)
				seen[n.ID] = true
			}
		}
	}
	for _, e := range edges {
		for _, end := range []string{e.From, e.To} {
			if seen[end] {
				continue
			}
			seen[end] = true
			kind, state := "external", "observed"
			switch {
			case strings.HasPrefix(end, "agent:"):
				kind, state = "agent", "gone"
			case strings.HasPrefix(end, "channel:"):
				kind = "channel"
			case strings.HasPrefix(end, "task:"):
				kind = "task"
			}
			t.Nodes = append(t.Nodes, Node{ID: end, Kind: kind, Name: end, State: state})
		}
	}
	return t, nil
}
