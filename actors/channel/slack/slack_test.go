package slack_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/slack"
	"github.com/fangd/fangd/actors/channel/slack/slacktest"
	"github.com/fangd/fangd/actors/kernel"
)

const (
	botToken = "xoxb-1-good"
	appToken = "xapp-1-good"
	signing  = "8f742231b10e8888abcd99yyyzzz85a5"
)

func setup(t *testing.T, body map[string]any) (*channeltest.Harness, *slacktest.Server) {
	fake := channeltest.Cleanup(t, slacktest.New(botToken, appToken))
	h := channeltest.New(t, channel.Builders{"slack": slack.New})
	b := map[string]any{"api_url": fake.APIURL(), "agent_name": channeltest.AgentName}
	for k, v := range body {
		b[k] = v
	}
	h.Configure("slack", b)
	return h, fake
}

func TestSlackSocketMode(t *testing.T) {
	h, fake := setup(t, map[string]any{"token": botToken, "app_token": appToken})
	v := h.WaitState("slack", channel.StateConnected)
	if v.Identity == nil || v.Identity.ID != "UBOT" {
		t.Fatalf("identity = %+v", v.Identity)
	}
	h.WaitFor("socket", func() bool { return fake.Connected() == 1 })
	env := fake.Push(fake.DM("D1", "U42", "hello slack"))
	h.WaitFor("DM reply", func() bool { return len(fake.Sent()) == 1 })
	if s := fake.Sent()[0]; s.Channel != "D1" || s.Text != "echo: hello slack" {
		t.Fatalf("sent = %+v", s)
	}
	h.WaitFor("envelope acked", func() bool { return fake.Acked(env) })
	fake.Push(fake.Mention("C1", "U42", "status please"))
	h.WaitFor("threaded reply", func() bool { return len(fake.Sent()) == 2 })
	if s := fake.Sent()[1]; s.Channel != "C1" || s.Text != "echo: status please" || s.ThreadTS == "" {
		t.Fatalf("sent = %+v", s)
	}
}

func TestSlackOutageAndQueuedReplies(t *testing.T) {
	h, fake := setup(t, map[string]any{"token": botToken, "app_token": appToken})
	h.WaitState("slack", channel.StateConnected)
	h.WaitFor("socket", func() bool { return fake.Connected() == 1 })
	h.SendThroughOutage(fake, "slack", "C9", "queued in the outage")
	h.WaitFor("queued message posted", func() bool { return len(fake.Sent()) == 1 })
	if s := fake.Sent()[0]; s.Channel != "C9" || s.Text != "queued in the outage" {
		t.Fatalf("sent = %+v", s)
	}
}

func sign(body []byte, ts string) string {
	mac := hmac.New(sha256.New, []byte(signing))
	mac.Write([]byte("v0:" + ts + ":"))
	mac.Write(body)
	return "v0=" + hex.EncodeToString(mac.Sum(nil))
}

func TestSlackEventsAPIWebhook(t *testing.T) {
	h, fake := setup(t, map[string]any{"token": botToken, "signing_secret": signing})
	h.WaitState("slack", channel.StateConnected)
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	challenge := []byte(`{"token":"x","challenge":"c-123","type":"url_verification"}`)
	resp, err := h.Service.Webhook(context.Background(), "slack", &channel.WebhookRequest{Method: "POST", Body: challenge, Header: http.Header{
		"X-Slack-Request-Timestamp": {ts}, "X-Slack-Signature": {sign(challenge, ts)}}})
	if err != nil || string(resp.Body) != "c-123" {
		t.Fatalf("url_verification: %+v %v", resp, err)
	}
	body, _ := json.Marshal(fake.DM("D2", "U7", "via events api"))
	_, err = h.Service.Webhook(context.Background(), "slack", &channel.WebhookRequest{Method: "POST", Body: body, Header: http.Header{
		"X-Slack-Request-Timestamp": {ts}, "X-Slack-Signature": {"v0=deadbeef"}}})
	if e := kernel.AsError(err); e == nil || e.Kind != kernel.KindUnauthorized {
		t.Fatalf("bad signature: %v", err)
	}
	if _, err := h.Service.Webhook(context.Background(), "slack", &channel.WebhookRequest{Method: "POST", Body: body, Header: http.Header{
		"X-Slack-Request-Timestamp": {ts}, "X-Slack-Signature": {sign(body, ts)}}}); err != nil {
		t.Fatal(err)
	}
	h.WaitFor("reply", func() bool { return len(fake.Sent()) == 1 })
	if len(h.Agents.Turns()) != 1 {
		t.Fatal("the badly signed event was routed")
	}
}
