package gotify_test

import (
	"context"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/gotify"
	"github.com/fangd/fangd/actors/channel/gotify/gotifytest"
)

// platform drives gotifytest for the conformance suite: a phone script
// pushes with its own application token; fangd replies as the "fangd"
// application (id 1) and reads the client stream.
type platform struct{ *gotifytest.Server }

func (p platform) Configure(h *channeltest.Harness, bad bool) {
	client := gotifytest.BotClientToken
	if bad {
		client = "Cnope"
	}
	h.Configure("gotify", map[string]any{"app_token": gotifytest.BotAppToken, "client_token": client,
		"server_url": p.URL, "agent_name": channeltest.AgentName})
}

func (p platform) Ready(ctx context.Context) error { return p.WaitStreams(ctx, 1) }

func (p platform) Inject(_ context.Context, text string) error {
	_, err := p.Push(gotifytest.PhoneAppToken, "phone", text)
	return err
}

func (p platform) WaitReply(ctx context.Context, text string) error {
	_, err := p.WaitMessage(ctx, func(m gotifytest.Message) bool { return m.AppID == 1 && m.Message == text })
	return err
}

func (p platform) LinkRequests() int { return p.Requests("GET /current/user") }

func (p platform) RateLimitNext(n int) time.Duration {
	p.Server.RateLimitNext(n)
	return time.Second
}

func TestConformance(t *testing.T) {
	channeltest.Conformance(t, channeltest.Suite{
		Name:     "gotify",
		Builders: channel.Builders{"gotify": gotify.New},
		New: func(t *testing.T) channeltest.Platform {
			srv := gotifytest.New()
			t.Cleanup(srv.Close)
			return platform{srv}
		},
		BadTokenError: "valid access token",
		Skip: map[channeltest.Case]string{
			channeltest.CaseBadSignature: "Gotify delivers over the client's websocket stream; there is no webhook to sign",
		},
	})
}
