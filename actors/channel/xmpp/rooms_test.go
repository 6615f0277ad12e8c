package xmpp

// Rooms against a real prosody with its default room locking: joins are
// checked, rooms the bot creates are unlocked, private messages in a room
// are answered privately; and the raw stanzas the adapter writes.

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goxmpp "github.com/xmppo/go-xmpp"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/channeltest"
)

func configureRooms(h *channeltest.Harness, port int, rooms ...string) {
	h.Configure("xmpp", map[string]any{"jid": "bot@localhost", "token": "botpw", "server": "127.0.0.1", "port": port,
		"starttls": false, "rooms": rooms, "agent_name": channeltest.AgentName})
}

// got reports whether alice received text from `from` as a stanza of type typ.
func (h *human) gotAs(from, typ, text string) bool {
	h.Lock()
	defer h.Unlock()
	for _, m := range h.got {
		if m.Remote == from && m.Type == typ && m.Text == text {
			return true
		}
	}
	return false
}

func TestXMPPCreatedRoomIsUnlockedForOthers(t *testing.T) {
	// the bot creates the room
	h, alice := connectedWithAlice(t, startLockingProsody(t), func(h *channeltest.Harness, port int) { configureRooms(h, port, "fresh@conference.localhost") })
	// Until the bot configures the room, prosody answers alice's join with
	// item-not-found and her message never reaches the bot.
	h.WaitFor("alice in the room, answered there", func() bool {
		alice.c.JoinMUCNoHistory("fresh@conference.localhost", "alice")
		alice.c.Send(goxmpp.Chat{Remote: "fresh@conference.localhost", Type: "groupchat", Text: "bot: are you there"})
		time.Sleep(200 * time.Millisecond)
		return alice.gotAs("fresh@conference.localhost/bot", "groupchat", "echo: are you there")
	}, alice.dump)
	if v := h.Get("xmpp"); v.State != channel.StateConnected || v.LastError != "" {
		t.Fatalf("status %s %q", v.State, v.LastError)
	}
}

func TestXMPPRoomJoinFailureIsReported(t *testing.T) {
	srv := startLockingProsody(t)
	alice := login(t, srv.Port)
	// alice creates the room and holds it (locked, unconfigured), so the
	// bot's join is refused.
	alice.c.JoinMUCNoHistory("busy@conference.localhost", "alice")
	time.Sleep(200 * time.Millisecond)
	h := channeltest.New(t, channel.Builders{"xmpp": New})
	configureRooms(h, srv.Port, "busy@conference.localhost")
	v := h.WaitState("xmpp", channel.StateDegraded)
	if !strings.Contains(v.LastError, "could not join room busy@conference.localhost") {
		t.Fatalf("last_error = %q", v.LastError)
	}
	// One-to-one chat still works on the degraded link.
	alice.c.Send(goxmpp.Chat{Remote: "bot@localhost", Type: "chat", Text: "still there?"})
	h.WaitFor("direct reply", func() bool { return alice.has("bot@localhost", "echo: still there?") }, alice.dump)
}

func TestXMPPPrivateRoomMessageIsAnsweredPrivately(t *testing.T) {
	h, alice := connectedWithAlice(t, startProsody(t), func(h *channeltest.Harness, port int) { configureRooms(h, port, "lobby@conference.localhost") })
	alice.c.JoinMUCNoHistory("lobby@conference.localhost", "alice")
	time.Sleep(200 * time.Millisecond)
	alice.c.Send(goxmpp.Chat{Remote: "lobby@conference.localhost/bot", Type: "chat", Text: "a private question"})
	h.WaitFor("private reply", func() bool {
		return alice.gotAs("lobby@conference.localhost/bot", "chat", "echo: a private question")
	}, alice.dump)
	if alice.gotAs("lobby@conference.localhost/bot", "groupchat", "echo: a private question") {
		t.Fatal("the private question was answered in the room")
	}
	turns := h.Agents.Turns()
	if len(turns) != 1 || turns[0].Session != "channel:xmpp:lobby@conference.localhost/alice" {
		t.Fatalf("turns = %+v", turns)
	}
}

// writes records each write go-xmpp's debug tee makes ("SEND <bytes>"
// for what goes to the server, "RECV <bytes>" for what came back).
type writes struct {
	mu  sync.Mutex
	all [][]byte
}

func (w *writes) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.all = append(w.all, bytes.Clone(p))
	return len(p), nil
}

func (w *writes) sent() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, p := range w.all {
		if rest, ok := bytes.CutPrefix(p, []byte("SEND ")); ok {
			out = append(out, string(rest))
		}
	}
	return out
}

func TestXMPPStanzasCarryNoControlCharacters(t *testing.T) {
	srv := startProsody(t)
	spec, _ := channel.Lookup("xmpp")
	ad, err := New(&channel.Config{Spec: spec, Values: map[string]string{"jid": "bot@localhost", "server": "127.0.0.1",
		"port": strconv.Itoa(srv.Port), "starttls": "false"}, Secrets: map[string]string{"password": "botpw"}})
	if err != nil {
		t.Fatal(err)
	}
	a := ad.(*Adapter)
	var wire writes
	a.opts.Debug, a.opts.DebugWriter = true, &wire
	host := channeltest.NewHost()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, host) }()
	defer func() { cancel(); <-done }()
	<-host.Connections
	alice := login(t, srv.Port)

	text := "line\r\nnul\x00 esc\x1b bell\x07 end</body></message><presence type='unavailable'/>\ufffe"
	if _, err := a.Send(ctx, channel.Outbound{ChatID: "alice@localhost", Text: text, ThreadID: "t\x01h"}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(15 * time.Second); alice.dump() == ""; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the message never reached alice")
		}
	}
	if !alice.has("bot@localhost", "line\nnul\ufffd esc\ufffd bell\ufffd end</body></message><presence type='unavailable'/>\ufffd") {
		t.Fatalf("alice got %s", alice.dump())
	}
	for _, rest := range wire.sent() {
		for _, r := range rest {
			if (r < ' ' && r != '\t' && r != '\r' && r != '\n') || r == 0xfffe {
				t.Fatalf("a character XML cannot carry was written: %q", rest)
			}
		}
		if strings.Contains(rest, "<presence type='unavailable'/>") {
			t.Fatalf("text became markup: %q", rest)
		}
	}
	// The stream survived (prosody closes it on invalid XML).
	pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
	defer pcancel()
	if _, err := a.Probe(pctx); err != nil {
		t.Fatalf("probe after the message: %v", err)
	}
}
