package email_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/email"
	"github.com/fangd/fangd/actors/channel/email/emailtest"
)

// platform drives the in-process IMAP and SMTP servers for the
// conformance suite: Ann's mail lands in the bot's INBOX, which fangd
// reads over IMAP through a channeltest.Proxy (counting its connections,
// playing the outage); replies go out by SMTP, which refuses with 451
// during an outage. The mailbox keeps what arrives meanwhile.
type platform struct {
	*channeltest.Proxy
	im *imapPeer
	sm *emailtest.SMTP
	n  *atomic.Int64
}

func (p platform) Configure(h *channeltest.Harness, bad bool) {
	proxied := *p.im
	proxied.addr = fmt.Sprintf("127.0.0.1:%d", p.Port)
	configure(h, &proxied, p.sm, channeltest.Credential(bad, botPass, "wrong"))
}

func (p platform) Inject(_ context.Context, text string) error {
	n := p.n.Add(1)
	p.im.deliver("ann@fangd.test", fmt.Sprintf("Message %d", n), text, fmt.Sprintf("<m%d@fangd.test>", n))
	return nil
}

func (p platform) WaitReply(ctx context.Context, text string) error { return p.sm.Wait(ctx, text) }

func (p platform) SetDown(down bool) {
	p.sm.SetDown(down)
	p.Proxy.SetDown(down)
}

func TestConformance(t *testing.T) {
	channeltest.Conformance(t, channeltest.Suite{
		LinkRoute: channeltest.ProxyConnect,
		Name:      "email",
		Builder:   email.New,
		New: func(t *testing.T) channeltest.Platform {
			im, sm := startIMAP(t), emailtest.StartSMTP(t)
			return platform{Proxy: channeltest.NewProxy(t, im.addr), im: im, sm: sm, n: new(atomic.Int64)}
		},
		BadTokenError: "login failed",
		Skip: map[channeltest.Case]string{
			channeltest.CaseRateLimit:    "SMTP names no wait: a server that is busy answers 421/451, which the outbox retries on its backoff like any transient failure (the outage case covers it)",
			channeltest.CaseBadSignature: "mail arrives by IMAP; there is no webhook to sign",
		},
	})
}
