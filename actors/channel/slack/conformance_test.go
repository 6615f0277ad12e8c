package slack_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/slack"
	"github.com/fangd/fangd/actors/channel/slack/slacktest"
)

// platform drives slacktest for the conformance suite: U42 writes to the
// bot in DM D1 over Socket Mode; replies are chat.postMessage. The
// signing secret is set too, so the Events API endpoint is open.
type platform struct {
	*slacktest.Server
	endpoint string
}

func (p *platform) Configure(h *channeltest.Harness, bad bool) {
	p.endpoint = h.WebhookURL("slack")
	h.Configure("slack", map[string]any{"token": channeltest.Credential(bad, botToken, "xoxb-bad"), "app_token": appToken, "signing_secret": signing,
		"api_url": p.APIURL(), "agent_name": channeltest.AgentName})
}

func (p *platform) Ready(ctx context.Context) error { return p.WaitConnected(ctx, 1) }

func (p *platform) Inject(_ context.Context, text string) error {
	p.Push(p.DM("D1", "U42", text))
	return nil
}

func (p *platform) WaitReply(ctx context.Context, text string) error {
	_, err := p.WaitSent(ctx, func(s slacktest.Sent) bool { return s.Channel == "D1" && s.Text == text })
	return err
}

// InjectForged posts an Events API callback whose signature is not made
// with the app's signing secret.
func (p *platform) InjectForged(_ context.Context, text string) (int, error) {
	body, _ := json.Marshal(p.DM("D1", "U42", text))
	return channeltest.Post(p.endpoint, body, http.Header{
		"X-Slack-Request-Timestamp": {strconv.FormatInt(time.Now().Unix(), 10)}, "X-Slack-Signature": {"v0=deadbeef"}})
}

func TestConformance(t *testing.T) {
	channeltest.Conformance(t, channeltest.Suite{
		Name: "slack", Builder: slack.New, LinkRoute: "auth.test",
		New: func(t *testing.T) channeltest.Platform {
			return &platform{Server: channeltest.Cleanup(t, slacktest.New(botToken, appToken))}
		},
		BadTokenError: "invalid_auth",
		NoCatchUp:     "Slack redelivers an unacknowledged event on its own schedule (retry_attempt, minutes apart), which the fake does not model",
	})
}
