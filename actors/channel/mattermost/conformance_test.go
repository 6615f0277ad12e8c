package mattermost_test

import (
	"context"
	"strings"
	"testing"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/mattermost"
	mm "github.com/fangd/fangd/actors/channel/mattermost/mattermosttest"
)

// platform: Alice posts in Town Square; fangd reads the websocket and
// posts as the bot.
type platform struct{ *mm.Server }

func (p platform) Configure(h *channeltest.Harness, bad bool) {
	h.Configure("mattermost", map[string]any{"token": channeltest.Credential(bad, mm.BotToken, "not-a-token"),
		"server_url": p.URL, "agent_name": channeltest.AgentName})
}

func (p platform) Ready(ctx context.Context) error { return p.WaitConnected(ctx, 1) }

func (p platform) Inject(_ context.Context, text string) error {
	p.Say(mm.Alice, mm.TownSquare.ID, text, "")
	return nil
}

func (p platform) WaitReply(ctx context.Context, text string) error {
	_, err := p.WaitPost(ctx, func(q mm.Post) bool { return q.UserID == mm.Bot.ID && q.Message == text })
	return err
}

func newPlatform(t *testing.T) channeltest.Platform {
	srv := mm.New()
	t.Cleanup(srv.Close)
	return platform{srv}
}

func TestConformance(t *testing.T) {
	channeltest.Conformance(t, channeltest.Suite{
		Name: "mattermost", Builder: mattermost.New, LinkRoute: "GET /api/v4/users/me",
		New: newPlatform, BadTokenError: "Invalid or expired session",
		Skip: map[channeltest.Case]string{channeltest.CaseBadSignature: "Mattermost delivers posts over the websocket; fangd takes no outgoing webhooks from it"},
	})
}

// Replies thread under the post they answer, posts typed while fangd was
// away are answered from history, and a restart answers nothing twice.
func TestPostsMissedDuringOutageAreAnsweredInThread(t *testing.T) {
	srv := newPlatform(t).(platform)
	h := channeltest.New(t, channel.Builders{"mattermost": mattermost.New})
	h.Connect("mattermost", map[string]any{"token": mm.BotToken, "server_url": srv.URL,
		"agent_name": channeltest.AgentName, "allowed_users": []string{"alice"}})
	ctx := channeltest.Context(t)
	_ = srv.WaitConnected(ctx, 1)
	srv.Say(mm.Alice, mm.TownSquare.ID, "before", "")
	if err := srv.WaitReply(ctx, "echo: before"); err != nil {
		t.Fatal(err)
	}
	srv.SetDown(true)
	h.WaitState("mattermost", channel.StateBackoff)
	// Typed while fangd could not listen.
	missed := srv.Say(mm.Alice, mm.TownSquare.ID, "during", "")
	srv.SetDown(false)
	reply, err := srv.WaitPost(ctx, func(q mm.Post) bool { return q.Message == "echo: during" })
	if err != nil {
		t.Fatal(err)
	}
	if reply.RootID != missed.ID {
		t.Fatalf("reply %+v not threaded under %s", reply, missed.ID)
	}
	h.Restart() // and nothing is answered twice after a restart
	h.WaitState("mattermost", channel.StateConnected)
	srv.Say(mm.Alice, mm.TownSquare.ID, "after", "")
	if err := srv.WaitReply(ctx, "echo: after"); err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for _, tr := range h.Agents.Turns() {
		msgs = append(msgs, tr.Message)
	}
	if strings.Join(msgs, ",") != "before,during,after" {
		t.Fatalf("agent saw %v", msgs)
	}
}
