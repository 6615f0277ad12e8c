package comms

import (
	"context"
	"testing"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/kernel/kerneltest"
)

type fakePeers struct{ calls []string }

func (f *fakePeers) SendAgent(_ context.Context, node, agent, message, sender string) (PeerReply, error) {
	f.calls = append(f.calls, node+"|"+agent+"|"+message+"|"+sender)
	if node != "node-b" && node != "nid-b" {
		return PeerReply{}, kernel.NotFound("Peer not found")
	}
	return PeerReply{Text: "remote: " + message, AgentID: "ra1", NodeID: "nid-b", NodeName: "node-b"}, nil
}

func (f *fakePeers) Nodes(context.Context) ([]Node, error) {
	return []Node{{ID: "peer:nid-b/agent:ra1", Kind: "remote_agent", Name: "helper", State: "running"}}, nil
}

// A "peer:" target runs one remote turn, answers the local shape plus the
// node, resolves an agent sender to its id, and shows as a route to the
// remote agent in the topology; malformed targets are 400, and without
// a peer network 503.
func TestSendToPeerAgent(t *testing.T) {
	h := startBus(t, t.TempDir(), BusOptions{})
	r := startRouter(t, h, RouterOptions{Agents: team()})
	ctx := context.Background()
	if _, err := r.Send(ctx, "", "peer:node-b/agent:helper", "hi"); kernel.AsError(err) == nil || kernel.AsError(err).Kind != kernel.KindUnavailable {
		t.Fatalf("no peer network: %v", err)
	}
	p := &fakePeers{}
	r.SetPeers(p)
	r.AddNodeSource(p)
	res, err := r.Send(ctx, "agent:coder", "peer:node-b/agent:helper", "hello")
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != "delivered" || *res.Response != "remote: hello" || res.To != "peer:nid-b/agent:ra1" || res.AgentID != "ra1" ||
		res.Node == nil || res.Node.NodeID != "nid-b" || res.Node.NodeName != "node-b" {
		t.Fatalf("result %+v", res)
	}
	if p.calls[0] != "node-b|helper|hello|agent:a1" {
		t.Fatalf("call %q", p.calls[0])
	}
	for _, bad := range []string{"peer:node-b", "peer:/agent:x", "peer:node-b/agent:", "peer:node-b/robot:x"} {
		if _, err := r.Send(ctx, "", bad, "x"); kernel.AsError(err) == nil || kernel.AsError(err).Code != "invalid_input" {
			t.Errorf("%s: %v", bad, err)
		}
	}
	if _, err := r.Send(ctx, "", "peer:elsewhere/agent:x", "x"); kernel.AsError(err) == nil || kernel.AsError(err).Kind != kernel.KindNotFound {
		t.Fatalf("unknown peer: %v", err)
	}
	kerneltest.WaitFor(t, "the route on the bus", func() bool {
		topo, err := r.Topology(ctx)
		if err != nil {
			return false
		}
		for _, e := range topo.Edges {
			if e.From == "agent:a1" && e.To == "peer:nid-b/agent:ra1" && e.Kind == "ofp_message" && e.Messages == 1 {
				return true
			}
		}
		return false
	})
}
