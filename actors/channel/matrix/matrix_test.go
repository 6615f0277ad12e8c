package matrix_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/matrix"
	"github.com/fangd/fangd/actors/channel/matrix/matrixtest"
)

const room = "!lobby:fake.test"

func setup(t *testing.T, token string) (*channeltest.Harness, *matrixtest.Server) {
	fake := channeltest.Cleanup(t, matrixtest.New("syt_good"))
	h := channeltest.New(t, channel.Builders{"matrix": matrix.New})
	h.Configure("matrix", map[string]any{"token": token, "homeserver_url": fake.URL, "agent_name": channeltest.AgentName})
	return h, fake
}

func TestMatrixRoundTrip(t *testing.T) {
	h, fake := setup(t, "syt_good")
	fake.Say(room, "@old:fake.test", "history before the bot started") // never answered
	fake.Invite(room)
	v := h.WaitState("matrix", channel.StateConnected)
	if v.Identity == nil || v.Identity.Name != "@bot:fake.test" {
		t.Fatalf("identity = %+v", v.Identity)
	}
	h.WaitFor("invite accepted", func() bool { return fake.Joined(room) })
	ev := fake.Say(room, "@alice:fake.test", "hello matrix")
	h.WaitFor("reply", func() bool { return len(fake.Sent()) == 1 })
	s := fake.Sent()[0]
	if s.Body != "echo: hello matrix" || s.RoomID != room || s.InReplyTo != ev || !strings.HasPrefix(s.TxnID, "matrix-") {
		t.Fatalf("sent = %+v", s)
	}
	if turns := h.Agents.Turns(); len(turns) != 1 || turns[0].Session != "channel:matrix:"+room {
		t.Fatalf("turns = %+v", turns)
	}
	// The sync token is durable: after a restart nothing is answered twice.
	h.Restart()
	h.WaitState("matrix", channel.StateConnected)
	fake.Say(room, "@alice:fake.test", "again")
	h.WaitFor("second reply", func() bool { return len(fake.Sent()) == 2 }, func() string {
		v := h.Get("matrix")
		return fmt.Sprintf("%s %q in=%d out=%d turns=%d sync=%d", v.State, v.LastError, v.MessagesIn, v.MessagesOut, len(h.Agents.Turns()), fake.Calls("sync"))
	})
	// A fence: had "hello matrix" been redelivered, it would have been
	// answered before this.
	fake.Say(room, "@alice:fake.test", "fence")
	if _, err := fake.WaitSent(channeltest.Context(t), func(s matrixtest.Sent) bool { return s.Body == "echo: fence" }); err != nil {
		t.Fatal(err)
	}
	if n := len(h.Agents.Turns()); n != 3 {
		t.Fatalf("%d turns, want 3", n)
	}
}

func TestMatrixOutageAndQueuedReplies(t *testing.T) {
	h, fake := setup(t, "syt_good")
	fake.Invite(room)
	h.WaitState("matrix", channel.StateConnected)
	h.WaitFor("joined", func() bool { return fake.Joined(room) })
	h.SendThroughOutage(fake, "matrix", room, "queued during the outage")
	h.WaitFor("queued message delivered once", func() bool { return len(fake.Sent()) == 1 })
	if fake.Sent()[0].Body != "queued during the outage" {
		t.Fatalf("sent = %+v", fake.Sent())
	}
}
