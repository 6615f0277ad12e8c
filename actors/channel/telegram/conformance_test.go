package telegram_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/telegram"
	"github.com/fangd/fangd/actors/channel/telegram/telegramtest"
)

const hookSecret = "s3cret-token"

// platform drives telegramtest for the conformance suite: alice (user 7)
// writes to the bot in private chat 42. In webhook mode fangd registers a
// webhook and Telegram posts updates with the secret token; otherwise
// fangd long-polls getUpdates.
type platform struct {
	*telegramtest.Server
	webhook  bool
	endpoint string
}

func (p *platform) Configure(h *channeltest.Harness, bad bool) {
	body := map[string]any{"token": channeltest.Credential(bad, token, "999:wrong"), "agent_name": channeltest.AgentName, "api_url": p.URL(), "poll_interval_secs": 1}
	if p.webhook {
		p.endpoint = h.WebhookURL("telegram")
		body["webhook_url"], body["webhook_secret"] = "https://bot.example.org/channels/telegram/webhook", hookSecret
	}
	h.Configure("telegram", body)
}

func (p *platform) Inject(_ context.Context, text string) error {
	if !p.webhook {
		p.UserMessage(42, 7, "alice", text)
		return nil
	}
	return channeltest.Accepted(p.post(p.Update(42, 7, "alice", text), hookSecret))
}

func (p *platform) post(body []byte, secret string) (int, error) {
	return channeltest.Post(p.endpoint, body, http.Header{"X-Telegram-Bot-Api-Secret-Token": {secret}})
}

func (p *platform) WaitReply(ctx context.Context, text string) error {
	_, err := p.WaitSent(ctx, func(s telegramtest.Sent) bool { return s.ChatID == "42" && s.Text == text })
	return err
}

func (p *platform) InjectForged(_ context.Context, text string) (int, error) {
	return p.post(p.Update(42, 7, "alice", text), "wrong")
}

func suite(webhook bool) channeltest.Suite {
	s := channeltest.Suite{
		Name: "telegram", Builder: telegram.New, LinkRoute: "getMe",
		New: func(t *testing.T) channeltest.Platform {
			fake := channeltest.Cleanup(t, telegramtest.New(token))
			return &platform{Server: fake, webhook: webhook}
		},
		BadTokenError: "Unauthorized",
	}
	if webhook {
		s.Pushed = true
	} else {
		s.Skip = map[channeltest.Case]string{channeltest.CaseBadSignature: "long polling takes no webhook; TestConformanceWebhookMode runs this case"}
	}
	return s
}

func TestConformance(t *testing.T) { channeltest.Conformance(t, suite(false)) }

func TestConformanceWebhookMode(t *testing.T) { channeltest.Conformance(t, suite(true)) }
