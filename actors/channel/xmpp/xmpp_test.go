package xmpp

// Tests against a real prosody (Debian package, installed by
// `make test-deps`) on loopback.

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	goxmpp "github.com/xmppo/go-xmpp"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/xmpp/xmpptest"
)

func startProsody(t *testing.T) *xmpptest.Prosody {
	return startProsodyWith(t, "    muc_room_locking = false\n")
}

// startLockingProsody keeps prosody's default: a room stays locked until
// its creator configures it.
func startLockingProsody(t *testing.T) *xmpptest.Prosody { return startProsodyWith(t, "") }

func startProsodyWith(t *testing.T, mucOptions string) *xmpptest.Prosody {
	t.Helper()
	p := xmpptest.NewProsody(t, "Component \"conference.localhost\" \"muc\"\n"+mucOptions)
	p.Start(t)
	return p
}

// human is alice on her own XMPP client.
type human struct {
	channeltest.FakeState
	c   *goxmpp.Client
	got []goxmpp.Chat
}

func login(t *testing.T, port int) *human {
	t.Helper()
	c, err := goxmpp.Options{Host: "127.0.0.1:" + strconv.Itoa(port), User: "alice@localhost", Password: "alicepw",
		NoTLS: true, InsecureAllowUnencryptedAuth: true, Mechanism: "PLAIN", Session: true, Resource: "phone"}.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	h := &human{c: c}
	// go-xmpp's Close reads the stream, racing with Recv: end our stream
	// instead and let the server close the connection.
	t.Cleanup(func() { c.SendOrg("</stream:stream>") })
	go func() {
		for {
			st, err := c.Recv()
			if err != nil {
				return
			}
			if m, ok := st.(goxmpp.Chat); ok && m.Text != "" {
				h.Lock()
				h.got = append(h.got, m)
				h.Changed()
				h.Unlock()
			}
		}
	}()
	return h
}

func (h *human) has(from, text string) bool {
	h.Lock()
	defer h.Unlock()
	for _, m := range h.got {
		if strings.HasPrefix(m.Remote, from) && m.Text == text {
			return true
		}
	}
	return false
}

// wait waits until she got text from from.
func (h *human) wait(ctx context.Context, from, text string) error {
	_, err := channeltest.WaitMatch(ctx, &h.FakeState, "no message "+text+" from "+from, func() []goxmpp.Chat { return h.got },
		func(m goxmpp.Chat) bool { return strings.HasPrefix(m.Remote, from) && m.Text == text })
	return err
}

func (h *human) dump() string {
	h.Lock()
	defer h.Unlock()
	var s []string
	for _, m := range h.got {
		s = append(s, m.Remote+": "+m.Text)
	}
	return strings.Join(s, " | ")
}

func configure(h *channeltest.Harness, port int, password string) {
	h.Configure("xmpp", map[string]any{"jid": "bot@localhost", "token": password, "server": "127.0.0.1", "port": port,
		"starttls": false, "rooms": "lobby@conference.localhost", "agent_name": channeltest.AgentName})
}

// connectedWithAlice configures the bot on srv with configure, waits until
// it is connected and logs alice in.
func connectedWithAlice(t *testing.T, srv *xmpptest.Prosody, configure func(h *channeltest.Harness, port int)) (*channeltest.Harness, *human) {
	h := channeltest.New(t, channel.Builders{"xmpp": New})
	configure(h, srv.Port)
	h.WaitState("xmpp", channel.StateConnected)
	return h, login(t, srv.Port)
}

func TestXMPPChatAndRoom(t *testing.T) {
	h, alice := connectedWithAlice(t, startProsody(t), func(h *channeltest.Harness, port int) { configure(h, port, "botpw") })
	alice.c.Send(goxmpp.Chat{Remote: "bot@localhost", Type: "chat", Text: "hello bot"})
	h.WaitFor("direct reply", func() bool { return alice.has("bot@localhost", "echo: hello bot") }, alice.dump)

	alice.c.JoinMUCNoHistory("lobby@conference.localhost", "alice")
	time.Sleep(200 * time.Millisecond)
	alice.c.Send(goxmpp.Chat{Remote: "lobby@conference.localhost", Type: "groupchat", Text: "not for the bot"})
	alice.c.Send(goxmpp.Chat{Remote: "lobby@conference.localhost", Type: "groupchat", Text: "bot: how are you"})
	h.WaitFor("room reply", func() bool { return alice.has("lobby@conference.localhost/bot", "echo: how are you") }, alice.dump)
	turns := h.Agents.Turns()
	if len(turns) != 2 || turns[0].Session != "channel:xmpp:alice@localhost" || turns[1].Session != "channel:xmpp:lobby@conference.localhost" {
		t.Fatalf("turns = %+v", turns)
	}
	if _, err := h.Service.Test(context.Background(), "xmpp", ""); err != nil {
		t.Fatalf("ping probe: %v", err)
	}
}
