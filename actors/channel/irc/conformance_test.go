package irc

import (
	"context"
	"strconv"
	"testing"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/channeltest"
)

// platform drives a real ngircd for the conformance suite. The bot
// connects through a channeltest.Proxy, which counts its connections and
// plays the outage; alice is connected to ngircd directly, so she stays
// while the bot's link is down, and writes to the bot privately.
type platform struct {
	*channeltest.Proxy
	alice *user
	h     *channeltest.Harness
}

func (p *platform) Configure(h *channeltest.Harness, bad bool) {
	p.h = h
	configure(h, p.Port, channeltest.Credential(bad, serverPassword, "wrong"))
}

func (p *platform) Inject(_ context.Context, text string) error {
	p.alice.say("PRIVMSG fangdbot :" + text)
	return nil
}

func (p *platform) WaitReply(ctx context.Context, text string) error {
	return p.alice.wait(ctx, text)
}

// Ready waits until the bot holds its own nick, which alice writes to.
// After a restart the previous daemon's last connection attempt can still
// reach ngircd (the proxy accepts it late) and hold the nick for a moment,
// so the bot registers as fangdbot_ and must take its nick back.
func (p *platform) Ready(context.Context) error {
	p.h.WaitFor("the bot to hold the nick fangdbot", func() bool {
		v := p.h.Get("irc")
		return v.Identity != nil && v.Identity.Name == "fangdbot"
	})
	return nil
}

func TestConformance(t *testing.T) {
	regainSoon(t)
	channeltest.Conformance(t, channeltest.Suite{
		LinkRoute: channeltest.ProxyConnect,
		Name:      "irc",
		Builders:  channel.Builders{"irc": New},
		New: func(t *testing.T) channeltest.Platform {
			srv := startNgircd(t)
			return &platform{Proxy: channeltest.NewProxy(t, "127.0.0.1:"+strconv.Itoa(srv.Port)), alice: connectUser(t, srv.Port, "alice")}
		},
		BadTokenError: "password",
		NoCatchUp:     "IRC keeps no backlog: a PRIVMSG to a nick that is not connected is refused (ERR_NOSUCHNICK), not stored",
		Skip: map[channeltest.Case]string{
			channeltest.CaseRateLimit:    "IRC has no rate-limit answer to honour: servers delay or disconnect a flooding client (Excess Flood), so the adapter paces itself (Capabilities.Pace)",
			channeltest.CaseBadSignature: "IRC is one TCP connection; there is no webhook to sign",
		},
	})
}
