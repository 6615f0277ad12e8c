package teams_test

import (
	"net/http"
	"testing"

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
	ms := channeltest.Cleanup(t, teamstest.New(appID, password))
	h := channeltest.New(t, channel.Builders{"teams": teams.New})
	return h, ms, h.WebhookURL("teams")
}

func configure(h *channeltest.Harness, ms *teamstest.Server, pw string) {
	h.Configure("teams", map[string]any{"app_id": appID, "token": pw, "auth_url": ms.TokenURL(),
		"openid_url": ms.MetadataURL(), "agent_name": channeltest.AgentName})
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

func TestReplyAnswersItsActivityAndTheTokenIsCached(t *testing.T) {
	h, ms, endpoint := setup(t)
	configure(h, ms, password)
	h.WaitState("teams", channel.StateConnected)
	for _, text := range []string{"one", "two"} {
		act := ms.Activity(teamstest.Message{ConversationID: conv, From: alice, Text: text})
		if err := channeltest.Accepted(ms.Post(endpoint, act, ms.SignedToken(appID, ms.URL))); err != nil {
			t.Fatal(err)
		}
		sent, err := ms.WaitSent(channeltest.Context(t), func(s teamstest.Sent) bool { return s.Activity.Text == "echo: "+text })
		if err != nil {
			t.Fatal(err)
		}
		if sent.Activity.Type != "message" || sent.ReplyToID != act.ID {
			t.Fatalf("reply %+v does not answer activity %s", sent, act.ID)
		}
	}
	if n := ms.Requests("POST " + teamstest.TokenPath); n > 2 {
		t.Fatalf("%d token requests: the access token is not cached", n)
	}
}
