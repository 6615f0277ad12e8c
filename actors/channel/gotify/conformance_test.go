package gotify_test

import (
	"context"
	"testing"

	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/gotify"
	"github.com/fangd/fangd/actors/channel/gotify/gotifytest"
)

// platform: a phone script pushes with its own application token; fangd
// reads the client stream and replies as the "fangd" application (id 1).
type platform struct{ *gotifytest.Server }

func (p platform) Configure(h *channeltest.Harness, bad bool) {
	h.Configure("gotify", map[string]any{"app_token": gotifytest.BotAppToken, "server_url": p.URL,
		"client_token": channeltest.Credential(bad, gotifytest.BotClientToken, "Cnope"), "agent_name": channeltest.AgentName})
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

func TestConformance(t *testing.T) {
	channeltest.Conformance(t, channeltest.Suite{
		Name: "gotify", Builder: gotify.New, LinkRoute: "GET /current/user",
		New: func(t *testing.T) channeltest.Platform {
			return platform{channeltest.Cleanup(t, gotifytest.New())}
		},
		BadTokenError: "valid access token",
		Skip:          map[channeltest.Case]string{channeltest.CaseBadSignature: "Gotify delivers over the client's websocket stream; there is no webhook to sign"},
	})
}
