package teams_test

import (
	"context"
	"testing"

	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/teams"
	"github.com/fangd/fangd/actors/channel/teams/teamstest"
)

// platform: the Teams channel service posts Alice's signed activities,
// @mentioning the bot, to fangd's messaging endpoint; the Bot Connector
// takes the replies.
type platform struct {
	*teamstest.Server
	endpoint string
}

func (p *platform) Configure(h *channeltest.Harness, bad bool) {
	p.endpoint = h.WebhookURL("teams")
	configure(h, p.Server, channeltest.Credential(bad, password, "wrong-password"))
}

func (p *platform) Inject(_ context.Context, text string) error {
	return channeltest.Accepted(p.SendMessage(p.endpoint, teamstest.Message{ConversationID: conv, From: alice, Text: "<at>fangd</at> " + text}))
}

func (p *platform) WaitReply(ctx context.Context, text string) error {
	_, err := p.WaitSent(ctx, func(s teamstest.Sent) bool { return s.ConversationID == conv && s.Activity.Text == text })
	return err
}

// InjectForged signs with a key the Bot Framework never published.
func (p *platform) InjectForged(_ context.Context, text string) (int, error) {
	return p.Post(p.endpoint, p.Activity(teamstest.Message{ConversationID: conv, From: alice, Text: text}), p.ForgedToken())
}

func TestConformance(t *testing.T) {
	channeltest.Conformance(t, channeltest.Suite{
		Name: "teams", Builder: teams.New, LinkRoute: "POST " + teamstest.TokenPath, Pushed: true,
		New: func(t *testing.T) channeltest.Platform {
			return &platform{Server: channeltest.Cleanup(t, teamstest.New(appID, password))}
		},
		BadTokenError: "AADSTS7000215",
	})
}
