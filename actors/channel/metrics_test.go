package channel_test

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/channeltest"
)

// metricValue is the value of the series of family name whose labels
// include all of want; -1 when there is none.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if got[k] != v {
					continue series
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return -1
}

// fangd_channel_state and fangd_channel_outbox_pending follow the channel
// actor's state at scrape time; the in/out counters move with messages
// that really flow through the fake platform.
func TestChannelMetricsFollowTheChannel(t *testing.T) {
	p := newPlatform("good")
	h := setup(t, p)
	h.Connect("telegram", map[string]any{"token": "good", "agent_name": channeltest.AgentName})
	reg := h.Kernel.Metrics
	state := func(st string) float64 {
		return metricValue(t, reg, "fangd_channel_state", map[string]string{"channel": "telegram", "state": st})
	}
	if state(channel.StateConnected) != 1 || state(channel.StateError) != 0 {
		t.Fatalf("connected %v error %v", state(channel.StateConnected), state(channel.StateError))
	}
	p.inbox <- channel.Inbound{ChatID: "42", UserID: "7", Text: "hi", MessageID: "m1"}
	h.WaitFor("reply sent and counted", func() bool {
		return metricValue(t, reg, "fangd_channel_messages_out_total", map[string]string{"adapter": "telegram"}) == 1
	})
	if n := metricValue(t, reg, "fangd_channel_messages_in_total", map[string]string{"adapter": "telegram"}); n != 1 {
		t.Fatalf("messages in %v, want 1", n)
	}
	// The platform goes away: a message sent now waits in the outbox.
	p.set(func(p *platform) { p.down = true })
	if _, err := h.Service.SendMessage(context.Background(), "telegram", "10", "queued", "system"); err != nil {
		t.Fatal(err)
	}
	h.WaitFor("outbox depth 1", func() bool {
		return metricValue(t, reg, "fangd_channel_outbox_pending", map[string]string{"channel": "telegram"}) == 1
	})
	p.set(func(p *platform) { p.down = false })
	h.WaitFor("outbox drained", func() bool {
		return metricValue(t, reg, "fangd_channel_outbox_pending", map[string]string{"channel": "telegram"}) == 0
	})
	if err := h.Service.Remove(context.Background(), "telegram"); err != nil {
		t.Fatal(err)
	}
	if n := state(channel.StateConnected); n != -1 {
		t.Fatalf("a removed channel still has a state series: %v", n)
	}
}
