package agent

import (
	"context"
	"testing"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/llm/llmtest"
)

// Agents are bounded: 20,000 idle agents were 448 MiB. A create beyond
// max_agents is a clear 409, stores nothing, and a delete makes room.
func TestMaxAgents(t *testing.T) {
	h := newHarnessWith(t, &harness{t: t, home: t.TempDir(), fake: llmtest.NewOpenAI(key), maxAgents: 3})
	a := h.create("a")
	h.create("b")
	h.create("c")
	_, err := h.agents.Create(context.Background(), Spec{Name: "d", Model: "fake/m"}, Who{})
	if e := kernel.AsError(err); e == nil || e.Kind != kernel.KindConflict || e.Code != "agent_limit_reached" {
		t.Fatalf("fourth agent: %v", err)
	}
	if all, _ := h.agents.List(context.Background()); len(all) != 3 {
		t.Fatalf("%d agents after a refused create", len(all))
	}
	if _, err := h.agents.Delete(context.Background(), Ref{ID: a.ID}, Who{}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.agents.Create(context.Background(), Spec{Name: "d", Model: "fake/m"}, Who{}); err != nil {
		t.Fatalf("after a delete: %v", err)
	}
}
