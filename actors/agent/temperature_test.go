package agent

import (
	"context"
	"testing"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/llm/llmtest"
)

// An agent's temperature is validated against its provider's range,
// persisted, sent with every turn (also after a restart), changed by a
// patch, and absent (the provider's default) when never set.
func TestAgentTemperatureValidatedPersistedAndSent(t *testing.T) {
	for _, anth := range []bool{false, true} {
		h := &harness{t: t, home: t.TempDir(), anthropicAPI: anth}
		hi := 2.0
		if h.fake = llmtest.NewOpenAI(key); anth {
			h.fake.Close()
			h.fake, hi = llmtest.NewAnthropic(key), 1
		}
		newHarnessWith(t, h)
		ctx := context.Background()
		for _, bad := range []float64{-0.1, hi + 0.01} {
			if _, err := h.agents.Create(ctx, Spec{Name: "hot", Model: "fake/m", Temperature: &bad}, Who{}); kernel.AsError(err) == nil || kernel.AsError(err).Kind != kernel.KindInvalid {
				t.Fatalf("anthropic=%v temperature %v: %v", anth, bad, err)
			}
		}
		if l, _ := h.agents.List(ctx); len(l) != 0 {
			t.Fatalf("a refused create left %+v", l)
		}
		plain := h.create("plain")
		if plain.Temperature != nil {
			t.Fatalf("unset temperature: %v", *plain.Temperature)
		}
		a, err := h.agents.Create(ctx, Spec{Name: "cool", Model: "fake/m", Temperature: f64(hi)}, Who{})
		if err != nil || a.Temperature == nil || *a.Temperature != hi {
			t.Fatalf("create: %+v %v", a, err)
		}
		bad := hi + 1
		if _, err := h.agents.Update(ctx, Ref{ID: a.ID}, Patch{Temperature: &bad}, Who{}); kernel.AsError(err) == nil {
			t.Fatalf("patch to %v accepted", bad)
		}
		h.stop()
		h.start()
		for _, id := range []string{a.ID, plain.ID} {
			if _, err := h.agents.Send(ctx, Send{Ref: Ref{ID: id}, Text: "t"}); err != nil {
				t.Fatal(err)
			}
		}
		reqs := h.fake.Requests()
		if got := reqs[0].Temperature; got == nil || *got != hi || reqs[1].Temperature != nil {
			t.Fatalf("anthropic=%v: after a restart the provider got %v then %v", anth, reqs[0].Temperature, reqs[1].Temperature)
		}
		up, err := h.agents.Update(ctx, Ref{ID: a.ID}, Patch{Temperature: f64(0.1)}, Who{})
		if err != nil || *up.Temperature != 0.1 {
			t.Fatalf("patch: %+v %v", up, err)
		}
		if _, err := h.agents.Send(ctx, Send{Ref: Ref{ID: a.ID}, Text: "t"}); err != nil {
			t.Fatal(err)
		}
		if reqs = h.fake.Requests(); *reqs[len(reqs)-1].Temperature != 0.1 {
			t.Fatalf("after the patch: %v", *reqs[len(reqs)-1].Temperature)
		}
	}
}
