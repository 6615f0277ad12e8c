package discord_test

import (
	"context"
	"testing"

	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/discord"
	"github.com/fangd/fangd/actors/channel/discord/discordtest"
)

// platform: user 42 writes to the bot in a DM over the gateway; replies
// are REST posts.
type platform struct{ *discordtest.Server }

func (p platform) Configure(h *channeltest.Harness, bad bool) {
	h.Configure("discord", map[string]any{"token": channeltest.Credential(bad, token, "wrong.token"), "api_url": p.APIURL(),
		"agent_name": channeltest.AgentName})
}

func (p platform) Ready(ctx context.Context) error { return p.WaitConnected(ctx, 1) }

func (p platform) Inject(_ context.Context, text string) error {
	p.UserMessage("c-dm", "", "42", text, false)
	return nil
}

func (p platform) WaitReply(ctx context.Context, text string) error {
	_, err := p.WaitSent(ctx, func(s discordtest.Sent) bool { return s.ChannelID == "c-dm" && s.Content == text })
	return err
}

func TestConformance(t *testing.T) {
	channeltest.Conformance(t, channeltest.Suite{
		Name: "discord", Builder: discord.New, LinkRoute: "GET /users/@me",
		New: func(t *testing.T) channeltest.Platform {
			return platform{channeltest.Cleanup(t, discordtest.New(token))}
		},
		BadTokenError: "Unauthorized",
		NoCatchUp:     "a new gateway session (IDENTIFY) gets no backlog; only RESUME replays, and a dropped session is not resumed",
		Skip:          map[channeltest.Case]string{channeltest.CaseBadSignature: "Discord delivers over the gateway websocket; interactions webhooks are not used"},
	})
}
