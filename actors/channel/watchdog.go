package channel

import (
	"context"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// The "linked but deaf" watchdog: a link can stay open while nothing
// arrives. A connected link quiet for longer than watchdog_secs gets a
// Probe; a failed probe is handled as the Run failing (reconnect with
// backoff), a good one means the quiet is real quiet.

func (a *channelActor) armWatchdog() {
	every := 30 * time.Second
	if a.watchdog > 0 {
		every = min(max(a.watchdog/3, 100*time.Millisecond), 30*time.Second)
	}
	a.schedule(every, &watchdogTick{})
}

// checkWatchdog probes the platform when a connected link has been quiet
// for longer than watchdog_secs: a websocket can stay open while nothing
// arrives ("linked but deaf").
func (a *channelActor) checkWatchdog() {
	if a.watchdog <= 0 || a.probing || a.status.State != StateConnected || a.adapter == nil {
		return
	}
	if time.Since(a.traffic) < a.watchdog {
		return
	}
	a.probing = true
	gen, ad, self, root, base := a.gen, a.adapter, a.self, a.rt.k.Root, a.base
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		ctx, cancel := context.WithTimeout(base, probeTimeout)
		defer cancel()
		_, err := ad.Probe(ctx)
		root.Send(self, &probeDone{gen: gen, err: err})
	}()
}

func (a *channelActor) probeDone(c actor.Context, m *probeDone) {
	a.probing = false
	if m.gen != a.gen || a.status.State != StateConnected {
		return
	}
	if m.err == nil {
		a.traffic = time.Now() // the platform answers; the quiet is real quiet
		return
	}
	quiet := time.Since(a.traffic).Round(time.Second)
	a.log.Warn().Err(m.err).Dur("quiet", quiet).Msg("no traffic and the probe failed: reconnecting")
	gen := a.gen
	a.stopRun()
	// Report it as the Run failing, so backoff and status are the same.
	a.gen = gen
	a.runEnded(c, &runEnded{gen: gen, err: classifiedLike(m.err, fmt.Errorf("no traffic for %s and the probe failed: %w", quiet, m.err))})
}

// classifiedLike keeps orig's class on the wrapped error.
func classifiedLike(orig, wrapped error) error {
	switch {
	case IsPermanent(orig):
		return Permanent(wrapped)
	case RetryHint(orig) > 0:
		return RetryAfter(wrapped, RetryHint(orig))
	}
	return wrapped
}
