package channel

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"runtime/debug"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/fangd/fangd/transport/neterr"
)

// The link lifecycle: one Run of the adapter at a time, numbered by a
// generation so that whatever an old Run still sends is ignored; a
// failed Run is reported as a state and reconnected with the kernel's
// capped, jittered backoff (from its first step again once a link stayed
// up for stableAfter), or stops the channel when the error is permanent.

// connect starts a new Run of the adapter.
func (a *channelActor) connect() {
	a.stopRun()
	a.gen++
	gen := a.gen
	ctx, cancel := context.WithCancel(a.base)
	a.cancel = cancel
	a.status.State = StateConnecting
	a.degraded = ""
	a.status.ConnectedSince = nil
	a.upSince = time.Time{}
	h := &host{rt: a.rt, self: a.self, gen: gen, name: a.name, log: a.log}
	ad, root := a.adapter, a.rt.k.Root
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		err := safeRun(func() error { return ad.Run(ctx, h) })
		root.Send(h.self, &runEnded{gen: gen, err: err})
	}()
}

// safeRun turns an adapter panic into an error: a bug in one adapter
// must not take the daemon down.
func safeRun(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("adapter panicked: %v\n%s", r, debug.Stack())
		}
	}()
	return fn()
}

func (a *channelActor) stopRun() {
	if a.cancel != nil {
		a.cancel()
		a.cancel = nil
	}
	a.gen++ // whatever the old Run still sends is stale
}

func (a *channelActor) runEnded(c actor.Context, m *runEnded) {
	if m.gen != a.gen {
		return
	}
	a.cancel = nil
	err := m.err
	if err == nil {
		err = errors.New("the platform closed the connection")
	}
	a.status.ConnectedSince = nil
	a.status.LastError, a.status.LastErrorCode = linkError(err)
	if IsPermanent(err) {
		a.fail(a.status.LastError)
		a.publish(c)
		return
	}
	if !a.upSince.IsZero() && time.Since(a.upSince) > stableAfter {
		a.attempt = 0
	}
	a.attempt++
	delay := a.rt.backoff.Jittered(a.attempt)
	if hint := RetryHint(err); hint > delay {
		delay = hint
	}
	next := a.rt.clock.Now().Add(delay)
	a.status.State = StateBackoff
	a.status.NextRetryAt = &next
	a.log.Warn().Err(err).Dur("retry_in_ms", delay).Int("attempt", a.attempt).Msg("channel link failed; reconnecting")
	a.schedule(delay, &reconnectNow{gen: a.gen})
	a.publish(c)
}

// linkError is what the status says about a failure: for a network
// failure its code, and its cause instead of the text when the text comes
// from an HTTP client and so names the URL (a Telegram URL holds the bot
// token); otherwise the adapter's own text, which may say what to do about
// it (an email server's private CA: set ca_cert_pem).
func linkError(err error) (msg, code string) {
	if !neterr.Network(err) {
		return err.Error(), ""
	}
	code, cause := neterr.Cause(err)
	if ue := (*url.Error)(nil); errors.As(err, &ue) {
		return cause, code
	}
	return err.Error(), code
}
