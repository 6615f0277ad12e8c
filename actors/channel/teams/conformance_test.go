package teams_test

import (
	"context"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/teams"
	"github.com/fangd/fangd/actors/channel/teams/teamstest"
)

// platform drives teamstest for the conformance suite: the Teams channel
// service posts Alice's signed activities to fangd's messaging endpoint;
// the Bot Connector takes the replies.
type platform struct {
	*teamstest.Server
	endpoint string
}

func (p *platform) Configure(h *channeltest.Harness, bad bool) {
	p.endpoint = h.WebhookURL("teams")
	configure(h, p.Server, map[bool]string{false: password, true: "wrong-password"}[bad])
}

func (p *platform) Ready(context.Context) error { return nil }

// Inject @mentions the bot, as a user in Teams does; the adapter strips it.
func (p *platform) Inject(_ context.Context, text string) error {
	return channeltest.Accepted(p.SendMessage(p.endpoint, teamstest.Message{ConversationID: conv, From: alice, Text: "<at>fangd</at> " + text}))
}

func (p *platform) WaitReply(ctx context.Context, text string) error {
	_, err := p.WaitSent(ctx, func(s teamstest.Sent) bool { return s.ConversationID == conv && s.Activity.Text == text })
	return err
}

func (p *platform) LinkRequests() int { return p.Requests("POST " + teamstest.TokenPath) }

func (p *platform) RateLimitNext(n int) time.Duration {
	p.Server.RateLimitNext(n, 1)
	return time.Second
}

// InjectForged signs with a key the Bot Framework never published.
func (p *platform) InjectForged(_ context.Context, text string) (int, error) {
	act := p.Activity(teamstest.Message{ConversationID: conv, From: alice, Text: text})
	return p.Post(p.endpoint, act, p.ForgedToken())
}

func TestConformance(t *testing.T) {
	channeltest.Conformance(t, channeltest.Suite{
		Name:     "teams",
		Builders: channel.Builders{"teams": teams.New},
		New: func(t *testing.T) channeltest.Platform {
			ms := teamstest.New(appID, password)
			t.Cleanup(ms.Close)
			return &platform{Server: ms}
		},
		BadTokenError: "AADSTS7000215",
		Pushed:        true,
	})
}
