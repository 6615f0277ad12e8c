package audit

import (
	"context"

	"github.com/fangd/fangd/store"
)

// ReportQuarantined logs and audits records a supervisor moved aside at
// start-up (store.EachOrQuarantine) because they do not decode; the daemon
// hands it to store.DB.OnQuarantine. The audit entries are written from a
// goroutine: supervisors load in Started, whose mailbox must not wait for
// the audit log.
func (l *Log) ReportQuarantined(q []store.Quarantined) {
	const component = "store"
	if len(q) == 0 {
		return
	}
	for _, r := range q {
		l.k.Log.Error().Str("component", component).Str("key", r.Key).Str("error", r.Error).
			Str("moved_to", "quarantine/"+r.Key).Msg("record does not decode: quarantined, the rest is served")
	}
	go func() {
		for _, r := range q {
			ctx, cancel := context.WithTimeout(context.Background(), AppendTimeout)
			_, err := l.Append(ctx, Event{EventType: "record_quarantined", Actor: "daemon", Outcome: "error",
				Details: component + ": " + r.Key + " does not decode (" + r.Error + "); moved to quarantine/" + r.Key})
			cancel()
			if err != nil {
				l.k.Log.Error().Err(err).Str("key", r.Key).Msg("could not audit a quarantined record")
			}
		}
	}()
}
