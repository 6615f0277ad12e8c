package teams_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/teams"
	"github.com/fangd/fangd/actors/channel/teams/teamstest"
)

const (
	appID    = "8c1e4f0e-0000-4000-8000-00000000bot1"
	password = "s3cr3t~app~password"
	conv     = "a:1xYz-personal-conversation"
)

var alice = teamstest.Account{ID: "29:1alice", Name: "Alice", AADObjectID: "aad-alice"}

func setup(t *testing.T) (*channeltest.Harness, *teamstest.Server, string) {
	ms := teamstest.New(appID, password)
	t.Cleanup(ms.Close)
	h := channeltest.New(t, channel.Builders{"teams": teams.New})
	return h, ms, h.WebhookURL("teams")
}

func configure(h *channeltest.Harness, ms *teamstest.Server, pw string) {
	h.Configure("teams", map[string]any{"app_id": appID, "token": pw, "auth_url": ms.TokenURL(),
		"openid_url": ms.MetadataURL(), "agent_name": channeltest.AgentName})
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestInboundReachesAgentAndReplyArrives(t *testing.T) {
	h, ms, endpoint := setup(t)
	configure(h, ms, password)
	h.WaitState("teams", channel.StateConnected)
	act := ms.Activity(teamstest.Message{ConversationID: conv, From: alice, Text: "<at>fangd</at> hello agent"})
	status, err := ms.Post(endpoint, act, ms.SignedToken(appID, ms.URL))
	if err != nil || status != http.StatusOK {
		t.Fatalf("activity: %d %v", status, err)
	}
	sent, err := ms.WaitSent(ctx(t), func(s teamstest.Sent) bool { return s.ConversationID == conv })
	if err != nil {
		t.Fatal(err)
	}
	if sent.Activity.Text != "echo: hello agent" || sent.Activity.Type != "message" || sent.ReplyToID != act.ID {
		t.Fatalf("reply %+v", sent)
	}
	turns := h.Agents.Turns()
	if len(turns) != 1 || turns[0].Message != "hello agent" {
		t.Fatalf("turns %+v (the @mention must be stripped)", turns)
	}
	if n := ms.Requests("POST " + teamstest.TokenPath); n > 2 {
		t.Fatalf("%d token requests: the access token is not cached", n)
	}
}

func TestForgedActivitiesAre401(t *testing.T) {
	h, ms, endpoint := setup(t)
	configure(h, ms, password)
	h.WaitState("teams", channel.StateConnected)
	act := ms.Activity(teamstest.Message{ConversationID: conv, From: alice, Text: "transfer the money"})
	evil := act
	evil.ServiceURL = "https://attacker.example/"
	cases := map[string]struct {
		a     teamstest.Activity
		token string
	}{
		"no token":           {act, ""},
		"unknown key":        {act, ms.ForgedToken()},
		"other audience":     {act, ms.SignedToken("some-other-bot", ms.URL)},
		"serviceUrl swapped": {evil, ms.SignedToken(appID, ms.URL)},
	}
	for name, c := range cases {
		if st, err := ms.Post(endpoint, c.a, c.token); err != nil || st != http.StatusUnauthorized {
			t.Fatalf("%s: status %d %v", name, st, err)
		}
	}
	if len(h.Agents.Turns()) != 0 || h.Get("teams").MessagesIn != 0 {
		t.Fatal("forged activity routed")
	}
}

func TestBadPasswordIsErrorWithoutRetryStorm(t *testing.T) {
	h, ms, _ := setup(t)
	configure(h, ms, "wrong-password")
	v := h.WaitState("teams", channel.StateError)
	if !strings.Contains(v.LastError, "AADSTS7000215") {
		t.Fatalf("last_error = %q", v.LastError)
	}
	time.Sleep(300 * time.Millisecond)
	if n := ms.Requests("POST " + teamstest.TokenPath); n != 1 {
		t.Fatalf("%d token requests with a bad password, want 1", n)
	}
}

func TestOutageBacksOffAndRecovers(t *testing.T) {
	h, ms, endpoint := setup(t)
	ms.SetDown(true)
	configure(h, ms, password)
	h.WaitState("teams", channel.StateBackoff)
	h.WaitFor("retries", func() bool { return ms.Requests("POST "+teamstest.TokenPath) >= 3 })
	ms.SetDown(false)
	h.WaitState("teams", channel.StateConnected)
	// The connector is briefly down while replying: the outbox retries.
	h.Agents.SetReply(func(_, m string) (string, error) {
		ms.SetDown(true)
		time.AfterFunc(300*time.Millisecond, func() { ms.SetDown(false) })
		return "echo: " + m, nil
	})
	if st, err := ms.SendMessage(endpoint, teamstest.Message{ConversationID: conv, From: alice, Text: "up?"}); err != nil || st != 200 {
		t.Fatalf("activity: %d %v", st, err)
	}
	if _, err := ms.WaitSent(ctx(t), func(s teamstest.Sent) bool { return s.Activity.Text == "echo: up?" }); err != nil {
		t.Fatal(err)
	}
}

func TestConnectorRateLimitIsRetried(t *testing.T) {
	h, ms, endpoint := setup(t)
	configure(h, ms, password)
	h.WaitState("teams", channel.StateConnected)
	ms.RateLimitNext(1, 1)
	if _, err := ms.SendMessage(endpoint, teamstest.Message{ConversationID: conv, From: alice, Text: "busy"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ms.WaitSent(ctx(t), func(s teamstest.Sent) bool { return s.Activity.Text == "echo: busy" }); err != nil {
		t.Fatal(err)
	}
}

func TestRepliesQueuedSurviveRestart(t *testing.T) {
	h, ms, endpoint := setup(t)
	configure(h, ms, password)
	h.WaitState("teams", channel.StateConnected)
	h.Agents.SetReply(func(_, m string) (string, error) {
		ms.SetDown(true)
		return "pong", nil
	})
	if _, err := ms.SendMessage(endpoint, teamstest.Message{ConversationID: conv, From: alice, Text: "ping"}); err != nil {
		t.Fatal(err)
	}
	h.WaitFor("reply queued", func() bool { return h.Get("teams").OutboxPending == 1 })
	h.Restart()
	h.WaitFor("reply still queued", func() bool { return h.Get("teams").OutboxPending == 1 })
	ms.SetDown(false)
	// The conversation's serviceUrl (the fake) was remembered across the
	// restart; without it the reply would go to Teams' global endpoint.
	if _, err := ms.WaitSent(ctx(t), func(s teamstest.Sent) bool { return s.Activity.Text == "pong" }); err != nil {
		t.Fatal(err)
	}
}
