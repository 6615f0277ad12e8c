package agent

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/llm"
	"github.com/fangd/fangd/actors/llm/llmtest"
)

// serverTools offers two MCP servers' tools and one that is no server's.
type serverTools struct{}

func (serverTools) Tools() []llm.Tool {
	return []llm.Tool{{Name: "mcp_a_x", Server: "a"}, {Name: "mcp_b_y", Server: "b"}, {Name: "a2a_send"}}
}

func (serverTools) Call(context.Context, ToolInvocation) (ToolOutput, error) {
	return ToolOutput{Text: "ok"}, nil
}

func offeredNames(h *harness) []string {
	reqs := h.fake.Requests()
	var names []string
	for _, t := range reqs[len(reqs)-1].Tools {
		names = append(names, t.Name)
	}
	slices.Sort(names)
	return names
}

// An agent's mcp_servers allow-list decides which MCP servers' tools it
// is offered; tools of no server (a2a_send) are not affected; [] is all.
func TestMCPServersAllowListFiltersOfferedTools(t *testing.T) {
	h := newHarnessWith(t, &harness{t: t, home: t.TempDir(), fake: llmtest.NewOpenAI(key), toolbox: serverTools{}})
	a, err := h.agents.Create(context.Background(), Spec{Name: "picky", Model: "fake/m", Tools: []string{"*"}, MCPServers: []string{"a"}}, Who{Actor: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.agents.Send(context.Background(), Send{Ref: Ref{ID: a.ID}, Text: "hi", From: "api"}); err != nil {
		t.Fatal(err)
	}
	if got := offeredNames(h); !slices.Equal(got, []string{"a2a_send", "mcp_a_x"}) {
		t.Fatalf("offered %v with mcp_servers [a]", got)
	}
	all := []string{}
	if _, err := h.agents.Update(context.Background(), Ref{ID: a.ID}, Patch{MCPServers: &all}, Who{Actor: "test"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.agents.Send(context.Background(), Send{Ref: Ref{ID: a.ID}, Text: "hi", From: "api"}); err != nil {
		t.Fatal(err)
	}
	if got := offeredNames(h); !slices.Equal(got, []string{"a2a_send", "mcp_a_x", "mcp_b_y"}) {
		t.Fatalf("offered %v with mcp_servers []", got)
	}
	bad := []string{"no spaces allowed"}
	if _, err := h.agents.Update(context.Background(), Ref{ID: a.ID}, Patch{MCPServers: &bad}, Who{Actor: "test"}); kernel.AsError(err) == nil || kernel.AsError(err).Kind != kernel.KindInvalid {
		t.Fatalf("a bad server name: %v", err)
	}
}

// An agent's channels allow-list refuses messages from other channels
// (403 channel_not_allowed, nothing reaches the provider); other senders
// are not affected; the list survives a restart.
func TestChannelsAllowListRefusesOtherChannels(t *testing.T) {
	h := newHarness(t)
	a, err := h.agents.Create(context.Background(), Spec{Name: "ops", Model: "fake/m", Channels: []string{"slack-ops"}}, Who{Actor: "test"})
	if err != nil {
		t.Fatal(err)
	}
	before := len(h.fake.Requests())
	_, err = h.agents.Send(context.Background(), Send{Ref: Ref{ID: a.ID}, Text: "hi", From: "channel:telegram:42"})
	var ke *kernel.Error
	if !errors.As(err, &ke) || ke.Kind != kernel.KindForbidden || ke.Code != "channel_not_allowed" {
		t.Fatalf("a message from a channel not allowed: %v", err)
	}
	if len(h.fake.Requests()) != before {
		t.Fatal("a refused message reached the provider")
	}
	for _, from := range []string{"channel:slack-ops:C1", "api", "agent:x"} {
		if _, err := h.agents.Send(context.Background(), Send{Ref: Ref{ID: a.ID}, Text: "hi", From: from}); err != nil {
			t.Fatalf("from %s: %v", from, err)
		}
	}
	h.stop()
	h.start()
	got, err := h.agents.Get(context.Background(), Ref{ID: a.ID})
	if err != nil || !slices.Equal(got.Channels, []string{"slack-ops"}) || len(got.MCPServers) != 0 || got.MCPServers == nil {
		t.Fatalf("after a restart: channels %v mcp_servers %#v (%v)", got.Channels, got.MCPServers, err)
	}
}
