package channel

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// scrapeTimeout bounds how long a scrape waits for the supervisor's
// snapshots; a busy supervisor costs the scrape these series, not a hung
// /metrics.
const scrapeTimeout = 2 * time.Second

// runningStates are the states a configured channel can be in, the
// values of fangd_channel_state's state label (one series per state, 1
// for the current one, so an alert can match state="error" == 1).
var runningStates = []string{StateConnected, StateDegraded, StateConnecting, StateBackoff, StateError, StateStopped}

var (
	stateDesc = prometheus.NewDesc("fangd_channel_state",
		"1 for the configured channel's current state, 0 for the others.", []string{"channel", "state"}, nil)
	outboxDesc = prometheus.NewDesc("fangd_channel_outbox_pending",
		"Outbound messages queued on disk for the channel, not yet delivered or dropped.", []string{"channel"}, nil)
	inboxDesc = prometheus.NewDesc("fangd_channel_inbox_pending",
		"Inbound messages stored for the channel whose agent turn has not finished.", []string{"channel"}, nil)
)

// stateCollector reads the supervisor's channel snapshots at scrape time,
// so the series are what GET /api/channels shows, not a copy kept in step
// by hand. Labels are bounded: one channel label per configured channel
// (MaxChannels at most) and the six running states.
type stateCollector struct{ s *Service }

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- stateDesc
	ch <- outboxDesc
	ch <- inboxDesc
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	snaps, err := c.s.snapshots(ctx)
	if err != nil {
		c.s.rt.log.Warn().Err(err).Msg("metrics: channel snapshots unavailable for this scrape")
		return
	}
	for name, sn := range snaps {
		cur := sn.status.State
		if cur == "" {
			cur = StateConnecting // as the API view shows a channel not reported yet
		}
		for _, st := range runningStates {
			v := 0.0
			if st == cur {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(stateDesc, prometheus.GaugeValue, v, name, st)
		}
		ch <- prometheus.MustNewConstMetric(outboxDesc, prometheus.GaugeValue, float64(sn.status.OutboxPending), name)
		ch <- prometheus.MustNewConstMetric(inboxDesc, prometheus.GaugeValue, float64(sn.status.InboxPending), name)
	}
}
