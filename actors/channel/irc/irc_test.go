package irc

// Tests against a real ngircd (Debian package, installed by
// `make test-deps`) on loopback.

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/irc/irctest"
)

const serverPassword = irctest.Password

func startNgircd(t *testing.T) *irctest.Ngircd {
	t.Helper()
	n := irctest.NewNgircd(t, "[Channel]\nName = #fangd\n")
	n.Start(t)
	return n
}

// user is a human on the IRC server, speaking raw protocol. The PRIVMSGs
// she gets are "from>target>text".
type user struct {
	channeltest.FakeState
	t    *testing.T
	conn net.Conn
	got  []string
}

func connectUser(t *testing.T, port int, nick string) *user {
	t.Helper()
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	u := &user{t: t, conn: c}
	t.Cleanup(func() { c.Close() })
	welcome := make(chan struct{})
	go func() {
		once := sync.Once{}
		readMessages(bufio.NewReader(c), func(m *message) {
			switch m.command {
			case "PING":
				fmt.Fprintf(c, "PONG :%s\r\n", m.param(0))
			case "001":
				once.Do(func() { close(welcome) })
			case "PRIVMSG":
				u.Lock()
				u.got = append(u.got, m.nick()+">"+m.param(0)+">"+m.param(1))
				u.Changed()
				u.Unlock()
			}
		})
	}()
	fmt.Fprintf(c, "PASS %s\r\nNICK %s\r\nUSER %s 0 * :test user\r\n", serverPassword, nick, nick)
	select {
	case <-welcome:
	case <-time.After(10 * time.Second):
		t.Fatal("test user not registered")
	}
	return u
}

func (u *user) say(line string) { fmt.Fprintf(u.conn, "%s\r\n", line) }

func (u *user) received() []string {
	u.Lock()
	defer u.Unlock()
	return append([]string(nil), u.got...)
}

// wait waits until she got text privately from the bot, under its nick or
// the alternative it takes while a dropped session of its own still holds
// the nick on the server (433: fangdbot_).
func (u *user) wait(ctx context.Context, text string) error {
	_, err := channeltest.WaitMatch(ctx, &u.FakeState, "no PRIVMSG "+text, func() []string { return u.got },
		func(g string) bool {
			from, rest, _ := strings.Cut(g, ">")
			return strings.TrimRight(from, "_") == "fangdbot" && rest == "alice>"+text
		})
	return err
}

func (u *user) has(want string) bool {
	for _, g := range u.received() {
		if g == want {
			return true
		}
	}
	return false
}

func configure(h *channeltest.Harness, port int, password string) {
	h.Configure("irc", map[string]any{"server": "127.0.0.1", "port": port, "nick": "fangdbot", "use_tls": false,
		"server_password": password, "channels": []string{"#fangd"}, "agent_name": channeltest.AgentName})
}

func TestIRCRoundTrip(t *testing.T) {
	srv := startNgircd(t)
	h := channeltest.New(t, channel.Builders{"irc": New})
	configure(h, srv.Port, serverPassword)
	v := h.WaitState("irc", channel.StateConnected)
	if v.Identity == nil || v.Identity.Name != "fangdbot" {
		t.Fatalf("identity = %+v", v.Identity)
	}
	alice := connectUser(t, srv.Port, "alice")
	alice.say("JOIN #fangd")
	alice.say("PRIVMSG fangdbot :hello bot")
	h.WaitFor("direct reply", func() bool { return alice.has("fangdbot>alice>echo: hello bot") }, func() string { return strings.Join(alice.received(), " | ") })
	// In a channel the bot answers only when addressed, in the channel.
	alice.say("PRIVMSG #fangd :just chatting")
	alice.say("PRIVMSG #fangd :fangdbot: status?")
	h.WaitFor("channel reply", func() bool { return alice.has("fangdbot>#fangd>echo: status?") }, func() string { return strings.Join(alice.received(), " | ") })
	turns := h.Agents.Turns()
	if len(turns) != 2 || turns[0].Session != "channel:irc:alice" || turns[1].Session != "channel:irc:#fangd" {
		t.Fatalf("turns = %+v", turns)
	}
	// The watchdog's probe is a PING on the live link.
	if _, err := h.Service.Test(context.Background(), "irc", ""); err != nil {
		t.Fatalf("probe: %v", err)
	}
}

func TestIRCOutageRecoversAndRejoins(t *testing.T) {
	srv := startNgircd(t)
	h := channeltest.New(t, channel.Builders{"irc": New})
	configure(h, srv.Port, serverPassword)
	h.WaitState("irc", channel.StateConnected)
	srv.Stop()
	h.WaitState("irc", channel.StateBackoff)
	srv.Start(t)
	h.WaitState("irc", channel.StateConnected)
	bob := connectUser(t, srv.Port, "bob")
	bob.say("JOIN #fangd")
	// The bot rejoined #fangd after the reconnect, so it hears the channel.
	h.WaitFor("channel reply after reconnect", func() bool {
		bob.say("PRIVMSG #fangd :fangdbot, are you back")
		time.Sleep(100 * time.Millisecond)
		return bob.has("fangdbot>#fangd>echo: are you back")
	}, func() string { return strings.Join(bob.received(), " | ") })
}

func TestParseAndCut(t *testing.T) {
	m, err := parse("@time=x :nick!u@h PRIVMSG #c :hello there :)\r\n")
	if err != nil || m.command != "PRIVMSG" || m.nick() != "nick" || m.param(0) != "#c" || m.param(1) != "hello there :)" {
		t.Fatalf("parse = %+v %v", m, err)
	}
	for _, p := range cutBytes(strings.Repeat("ü", 400), 350) {
		if len(p) > 350 || !strings.HasPrefix(p, "ü") {
			t.Fatalf("piece %q", p)
		}
	}
	if _, ok := channel.Addressed("fangdbot: hi", "fangdbot"); !ok {
		t.Fatal("addressed")
	}
	if _, ok := channel.Addressed("fangdbotty hi", "fangdbot"); ok {
		t.Fatal("not addressed")
	}
}

// regainSoon makes a bot on an alternative nick ask for its own every
// 50 ms for the rest of t (the tests of this package are sequential).
func regainSoon(t *testing.T) { setRegainEvery(t, 50*time.Millisecond) }

func setRegainEvery(t *testing.T, d time.Duration) {
	old := regainEvery
	regainEvery = d
	t.Cleanup(func() { regainEvery = old })
}

// A bot that finds its nick taken registers as fangdbot_ and takes its
// nick back once the holder is gone: at once when it sees the holder quit
// a channel they share, and by asking again periodically when it cannot
// see the holder. Users write to the configured nick, so a bot left on
// fangdbot_ would not hear them.
func TestIRCRegainsItsNick(t *testing.T) {
	for _, tc := range []struct {
		name        string
		every       time.Duration
		sameChannel bool
	}{
		{"sees the holder quit", time.Hour, true},
		{"asks again periodically", 50 * time.Millisecond, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setRegainEvery(t, tc.every)
			srv := startNgircd(t)
			squatter := connectUser(t, srv.Port, "fangdbot")
			if tc.sameChannel {
				squatter.say("JOIN #fangd")
			}
			h := channeltest.New(t, channel.Builders{"irc": New})
			configure(h, srv.Port, serverPassword)
			if v := h.WaitState("irc", channel.StateConnected); v.Identity == nil || v.Identity.Name != "fangdbot_" {
				t.Fatalf("identity while the nick is taken = %+v, want fangdbot_", v.Identity)
			}
			if tc.sameChannel {
				h.WaitFor("the bot in #fangd", func() bool {
					squatter.say("PRIVMSG #fangd :fangdbot_: here?")
					time.Sleep(50 * time.Millisecond)
					return squatter.has("fangdbot_>#fangd>echo: here?")
				})
			}
			since := h.Get("irc").ConnectedSince
			squatter.say("QUIT :bye")
			h.WaitFor("the nick regained", func() bool {
				v := h.Get("irc")
				return v.Identity != nil && v.Identity.Name == "fangdbot"
			})
			if v := h.Get("irc"); v.State != channel.StateConnected || v.ConnectedSince == nil || !v.ConnectedSince.Equal(*since) {
				t.Fatalf("after the nick change: state %s, connected since %v (was %v); the link never went down", v.State, v.ConnectedSince, since)
			}
			alice := connectUser(t, srv.Port, "alice")
			alice.say("PRIVMSG fangdbot :hello again")
			must(t, alice.wait(channeltest.Context(t), "echo: hello again"))
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
