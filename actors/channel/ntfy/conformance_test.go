package ntfy_test

import (
	"context"
	"slices"
	"testing"

	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/ntfy"
	"github.com/fangd/fangd/actors/channel/ntfy/ntfytest"
)

// platform: a phone publishes to the topic "fang"; fangd subscribes to it
// and publishes its replies there tagged ntfy.ReplyTag.
type platform struct{ *ntfytest.Server }

func (p platform) Configure(h *channeltest.Harness, bad bool) {
	h.Configure("ntfy", map[string]any{"token": channeltest.Credential(bad, ntfytest.BotToken, "tk_nope"),
		"server_url": p.URL, "topic": "fang", "agent_name": channeltest.AgentName})
}

func (p platform) Ready(ctx context.Context) error { return p.WaitSubscribers(ctx, "fang", 1) }

func (p platform) Inject(_ context.Context, text string) error {
	p.Publish("fang", "phone", text)
	return nil
}

func (p platform) WaitReply(ctx context.Context, text string) error {
	_, err := p.WaitMessage(ctx, func(m ntfytest.Message) bool { return m.Message == text && slices.Contains(m.Tags, ntfy.ReplyTag) })
	return err
}

func TestConformance(t *testing.T) {
	channeltest.Conformance(t, channeltest.Suite{
		Name: "ntfy", Builder: ntfy.New, LinkRoute: "GET /v1/account",
		New: func(t *testing.T) channeltest.Platform {
			return platform{channeltest.Cleanup(t, ntfytest.New())}
		},
		BadTokenError: "unauthorized",
		NoRetryAfter:  true, // ntfy's 429 (code 42901) names no wait
		Skip:          map[channeltest.Case]string{channeltest.CaseBadSignature: "ntfy delivers over a subscription stream; there is no webhook to sign"},
	})
}
