package xmpp

import (
	"context"
	"strconv"
	"testing"

	goxmpp "github.com/xmppo/go-xmpp"

	"github.com/fangd/fangd/actors/channel/channeltest"
)

// platform drives a real prosody for the conformance suite. The bot
// connects through a channeltest.Proxy, which counts its connections and
// plays the outage; alice is logged in directly and chats with the bot.
// prosody's mod_offline keeps what she sends while the bot is away.
type platform struct {
	*channeltest.Proxy
	alice *human
}

func (p platform) Configure(h *channeltest.Harness, bad bool) {
	configure(h, p.Port, channeltest.Credential(bad, "botpw", "wrong"))
}

func (p platform) Inject(_ context.Context, text string) error {
	_, _, err := p.alice.c.Send(goxmpp.Chat{Remote: "bot@localhost", Type: "chat", Text: text})
	return err
}

func (p platform) WaitReply(ctx context.Context, text string) error {
	return p.alice.wait(ctx, "bot@localhost", text)
}

func TestConformance(t *testing.T) {
	channeltest.Conformance(t, channeltest.Suite{
		LinkRoute: channeltest.ProxyConnect,
		Name:      "xmpp",
		Builder:   New,
		New: func(t *testing.T) channeltest.Platform {
			srv := startProsody(t)
			return platform{Proxy: channeltest.NewProxy(t, "127.0.0.1:"+strconv.Itoa(srv.Port)), alice: login(t, srv.Port)}
		},
		BadTokenError: "login failed",
		Skip: map[channeltest.Case]string{
			channeltest.CaseRateLimit:    "XMPP has no rate-limit answer to honour: a server throttles a client by reading its stream slowly (prosody's mod_limits), which is TCP back-pressure",
			channeltest.CaseBadSignature: "XMPP is one client stream; there is no webhook to sign",
		},
	})
}
