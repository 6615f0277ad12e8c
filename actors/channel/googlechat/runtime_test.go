package googlechat_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/googlechat"
	"github.com/fangd/fangd/actors/channel/googlechat/googlechattest"
)

var (
	room  = googlechattest.Space{Name: "spaces/AAAA", Type: "ROOM", SpaceType: "SPACE", DisplayName: "Team room"}
	alice = googlechattest.User{Name: "users/1111", DisplayName: "Alice"}
)

func setup(t *testing.T) (*channeltest.Harness, *googlechattest.Server, string) {
	g := channeltest.Cleanup(t, googlechattest.New())
	h := channeltest.New(t, channel.Builders{"google_chat": googlechat.New})
	return h, g, h.WebhookURL("google_chat")
}

func configure(h *channeltest.Harness, g *googlechattest.Server, sa string, extra map[string]any) {
	body := map[string]any{"token": sa, "api_url": g.APIURL(), "audience": g.ProjectNumber,
		"certs_url": g.JWKSURL(), "agent_name": channeltest.AgentName}
	for k, v := range extra {
		body[k] = v
	}
	h.Configure("google_chat", body)
}

func TestInboundReachesAgentAndReplyArrivesInThread(t *testing.T) {
	h, g, endpoint := setup(t)
	configure(h, g, g.ServiceAccountJSON(), nil)
	v := h.WaitState("google_chat", channel.StateConnected)
	if v.Identity == nil || v.Identity.Name != g.ClientEmail {
		t.Fatalf("identity %+v", v.Identity)
	}
	thread := "spaces/AAAA/threads/abc"
	st, err := g.SendMessage(endpoint, googlechattest.Event{Space: room, Sender: alice, Text: "hello agent", Thread: thread})
	if err != nil || st != http.StatusOK {
		t.Fatalf("event: %d %v", st, err)
	}
	c, err := g.WaitCreated(channeltest.Context(t), func(c googlechattest.Created) bool { return c.Space == "spaces/AAAA" })
	if err != nil {
		t.Fatal(err)
	}
	if c.Message.Text != "echo: hello agent" || c.Message.Thread == nil || c.Message.Thread.Name != thread ||
		c.ReplyOption != "REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD" || c.ViaWebhook {
		t.Fatalf("created %+v", c)
	}
	// Non-message events are acknowledged and not routed.
	if st, _ := g.SendMessage(endpoint, googlechattest.Event{Space: room, Sender: alice, EventType: "ADDED_TO_SPACE"}); st != 200 {
		t.Fatalf("ADDED_TO_SPACE: %d", st)
	}
	if n := len(h.Agents.Turns()); n != 1 {
		t.Fatalf("turns = %d", n)
	}
}

func TestIncomingWebhookSendsForItsSpace(t *testing.T) {
	h, g, endpoint := setup(t)
	configure(h, g, g.ServiceAccountJSON(), map[string]any{"incoming_webhook_url": g.IncomingWebhookURL("spaces/AAAA")})
	h.WaitState("google_chat", channel.StateConnected)
	if _, err := g.SendMessage(endpoint, googlechattest.Event{Space: room, Sender: alice, Text: "hi"}); err != nil {
		t.Fatal(err)
	}
	c, err := g.WaitCreated(channeltest.Context(t), func(c googlechattest.Created) bool { return c.Message.Text == "echo: hi" })
	if err != nil || !c.ViaWebhook {
		t.Fatalf("created %+v %v", c, err)
	}
}

func TestForgedEventsAre401(t *testing.T) {
	h, g, endpoint := setup(t)
	configure(h, g, g.ServiceAccountJSON(), nil)
	h.WaitState("google_chat", channel.StateConnected)
	body := g.EventBody(googlechattest.Event{Space: room, Sender: alice, Text: "forged"})
	for name, tok := range map[string]string{
		"no token":      "",
		"other project": g.SignedToken("999999999999"),
		"garbage":       "abc.def.ghi",
		"someone's JWT": strings.Repeat("x", 10),
	} {
		if st, err := g.Post(endpoint, body, tok); err != nil || st != http.StatusUnauthorized {
			t.Fatalf("%s: %d %v", name, st, err)
		}
	}
	if len(h.Agents.Turns()) != 0 {
		t.Fatal("forged event routed")
	}
}

func TestMissingAudienceIsConfigError(t *testing.T) {
	h, g, _ := setup(t)
	_, err := h.TryConfigure("google_chat", map[string]any{"token": g.ServiceAccountJSON(), "api_url": g.APIURL()})
	if err == nil || !strings.Contains(err.Error(), "audience") {
		t.Fatalf("err = %v", err)
	}
}
