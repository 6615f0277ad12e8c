package main

// The issue's "daemon kill -9 with replies queued -> restart -> replies
// delivered", for every built adapter, against the real binary: each
// adapter's platform fake (or a real peer) runs in this process on
// loopback, the daemon is killed with SIGKILL while two replies wait in the
// channel's durable outbox, and the restarted daemon must deliver both,
// once each, in order.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"

	"github.com/fangd/fangd/actors/channel/discord/discordtest"
	"github.com/fangd/fangd/actors/channel/email/emailtest"
	"github.com/fangd/fangd/actors/channel/googlechat/googlechattest"
	"github.com/fangd/fangd/actors/channel/gotify/gotifytest"
	"github.com/fangd/fangd/actors/channel/irc/irctest"
	"github.com/fangd/fangd/actors/channel/matrix/matrixtest"
	"github.com/fangd/fangd/actors/channel/mattermost/mattermosttest"
	"github.com/fangd/fangd/actors/channel/ntfy"
	"github.com/fangd/fangd/actors/channel/ntfy/ntfytest"
	"github.com/fangd/fangd/actors/channel/slack/slacktest"
	"github.com/fangd/fangd/actors/channel/teams/teamstest"
	"github.com/fangd/fangd/actors/channel/telegram/telegramtest"
	"github.com/fangd/fangd/actors/channel/webhook/webhooktest"
	"github.com/fangd/fangd/actors/channel/whatsapp/whatsapptest"
	"github.com/fangd/fangd/actors/llm/llmtest"
)

// killPeer is one platform as the kill -9 test drives it.
type killPeer struct {
	// configure is the POST /api/channels/{name}/configure body without
	// agent_name: credentials and the fake's URL as the API base URL field.
	configure map[string]any
	// chat is where replies go (the inbound's chat, and the comms target).
	chat string
	// ready reports that the platform side sees the bot listening (a
	// gateway session, a subscription); nil: `connected` is enough.
	ready func() bool
	// inbound makes a user write text; webhook is the daemon's
	// /channels/<name>/webhook URL for platforms that push.
	inbound func(t *testing.T, webhook, text string)
	// down switches the platform's outbound API off and on.
	down func(bool)
	// sent lists the texts the bot delivered to chat, in order.
	sent func() []string
}

type killCase struct {
	name string
	peer func(t *testing.T) killPeer
}

// texts is a killPeer's sent: what text says of each item its fake
// recorded (the text, and whether it went to the chat under test), in
// order.
func texts[S any](items []S, text func(S) (string, bool)) []string {
	var out []string
	for _, s := range items {
		if t, ok := text(s); ok {
			out = append(out, t)
		}
	}
	return out
}

func killCases() []killCase {
	return []killCase{
		{"telegram", func(t *testing.T) killPeer {
			tg := telegramtest.New("555:kill")
			t.Cleanup(tg.Close)
			return killPeer{
				configure: map[string]any{"token": "555:kill", "api_url": tg.URL(), "poll_interval_secs": 1},
				chat:      "5",
				inbound:   func(_ *testing.T, _, text string) { tg.UserMessage(5, 9, "bob", text) },
				down:      tg.SetDown,
				sent: func() []string {
					return texts(tg.Sent(), func(s telegramtest.Sent) (string, bool) { return s.Text, s.ChatID == "5" })
				},
			}
		}},
		{"discord", func(t *testing.T) killPeer {
			dc := discordtest.New("MTAx.kill.bot-token")
			t.Cleanup(dc.Close)
			return killPeer{
				configure: map[string]any{"token": "MTAx.kill.bot-token", "api_url": dc.APIURL()},
				chat:      "c-dm",
				ready:     func() bool { return dc.Connected() >= 1 },
				inbound:   func(_ *testing.T, _, text string) { dc.UserMessage("c-dm", "", "42", text, false) },
				down:      dc.SetDown,
				sent: func() []string {
					return texts(dc.Sent(), func(s discordtest.Sent) (string, bool) { return s.Content, s.ChannelID == "c-dm" })
				},
			}
		}},
		{"slack", func(t *testing.T) killPeer {
			sl := slacktest.New("xoxb-kill", "xapp-kill")
			t.Cleanup(sl.Close)
			return killPeer{
				configure: map[string]any{"token": "xoxb-kill", "app_token": "xapp-kill", "api_url": sl.APIURL()},
				chat:      "D1",
				ready:     func() bool { return sl.Connected() >= 1 },
				inbound:   func(_ *testing.T, _, text string) { sl.Push(sl.DM("D1", "U42", text)) },
				down:      sl.SetDown,
				sent: func() []string {
					return texts(sl.Sent(), func(s slacktest.Sent) (string, bool) { return s.Text, s.Channel == "D1" })
				},
			}
		}},
		{"matrix", func(t *testing.T) killPeer {
			const room = "!lobby:fake.test"
			mx := matrixtest.New("syt_kill")
			t.Cleanup(mx.Close)
			mx.Invite(room)
			return killPeer{
				configure: map[string]any{"token": "syt_kill", "homeserver_url": mx.URL},
				chat:      room,
				ready:     func() bool { return mx.Joined(room) },
				inbound:   func(_ *testing.T, _, text string) { mx.Say(room, "@alice:fake.test", text) },
				down:      mx.SetDown,
				// The fake answers a repeated transaction id with the first
				// event (the spec's idempotency): Sent lists each once.
				sent: func() []string {
					return texts(mx.Sent(), func(s matrixtest.Sent) (string, bool) { return s.Body, s.RoomID == room })
				},
			}
		}},
		{"mattermost", func(t *testing.T) killPeer {
			mm := mattermosttest.New()
			t.Cleanup(mm.Close)
			town := mattermosttest.TownSquare.ID
			return killPeer{
				configure: map[string]any{"token": mattermosttest.BotToken, "server_url": mm.URL},
				chat:      town,
				ready:     func() bool { return mm.Connections() >= 1 },
				inbound: func(_ *testing.T, _, text string) {
					mm.Say(mattermosttest.Alice, town, text, "")
				},
				down: mm.SetDown,
				sent: func() []string {
					return texts(mm.Posts(town), func(p mattermosttest.Post) (string, bool) { return p.Message, p.UserID == mattermosttest.Bot.ID })
				},
			}
		}},
		{"ntfy", func(t *testing.T) killPeer {
			nt := ntfytest.New()
			t.Cleanup(nt.Close)
			return killPeer{
				configure: map[string]any{"token": ntfytest.BotToken, "server_url": nt.URL, "topic": "fang"},
				chat:      "fang",
				ready:     func() bool { return nt.Subscribers("fang") >= 1 },
				inbound:   func(_ *testing.T, _, text string) { nt.Publish("fang", "phone", text) },
				down:      nt.SetDown,
				sent: func() []string {
					return texts(nt.Messages("fang"), func(m ntfytest.Message) (string, bool) { return m.Message, slices.Contains(m.Tags, ntfy.ReplyTag) })
				},
			}
		}},
		{"gotify", func(t *testing.T) killPeer {
			const botApp = 1 // the fake's "fangd" application
			gt := gotifytest.New()
			t.Cleanup(gt.Close)
			return killPeer{
				configure: map[string]any{"app_token": gotifytest.BotAppToken, "client_token": gotifytest.BotClientToken,
					"server_url": gt.URL},
				chat:  "2", // the phone application's id: replies (all posted as the bot's application) queue per sender
				ready: func() bool { return gt.Streams() >= 1 },
				inbound: func(t *testing.T, _, text string) {
					if _, err := gt.Push(gotifytest.PhoneAppToken, "phone", text); err != nil {
						t.Fatal(err)
					}
				},
				down: gt.SetDown,
				sent: func() []string {
					return texts(gt.Messages(botApp), func(m gotifytest.Message) (string, bool) { return m.Message, true })
				},
			}
		}},
		{"teams", func(t *testing.T) killPeer {
			const appID, password, conv = "8c1e4f0e-0000-4000-8000-0000000kill1", "kill~app~password", "a:1kill-conversation"
			ms := teamstest.New(appID, password)
			t.Cleanup(ms.Close)
			alice := teamstest.Account{ID: "29:1alice", Name: "Alice", AADObjectID: "aad-alice"}
			return killPeer{
				configure: map[string]any{"app_id": appID, "token": password, "auth_url": ms.TokenURL(), "openid_url": ms.MetadataURL()},
				chat:      conv,
				inbound: func(t *testing.T, webhook, text string) {
					if code, err := ms.SendMessage(webhook, teamstest.Message{ConversationID: conv, From: alice, Text: text}); err != nil || code/100 != 2 {
						t.Fatalf("teams activity: %d %v", code, err)
					}
				},
				down: ms.SetDown,
				sent: func() []string {
					return texts(ms.Sent(conv), func(s teamstest.Sent) (string, bool) { return s.Activity.Text, true })
				},
			}
		}},
		{"google_chat", func(t *testing.T) killPeer {
			g := googlechattest.New()
			t.Cleanup(g.Close)
			room := googlechattest.Space{Name: "spaces/KILL", Type: "ROOM", SpaceType: "SPACE", DisplayName: "Kill room"}
			alice := googlechattest.User{Name: "users/1111", DisplayName: "Alice"}
			g.AddSpace(room)
			return killPeer{
				configure: map[string]any{"token": g.ServiceAccountJSON(), "api_url": g.APIURL(), "audience": g.ProjectNumber,
					"certs_url": g.JWKSURL()},
				chat: room.Name,
				inbound: func(t *testing.T, webhook, text string) {
					if code, err := g.SendMessage(webhook, googlechattest.Event{Space: room, Sender: alice, Text: text}); err != nil || code/100 != 2 {
						t.Fatalf("chat event: %d %v", code, err)
					}
				},
				down: g.SetDown,
				sent: func() []string {
					return texts(g.Created(room.Name), func(c googlechattest.Created) (string, bool) { return c.Message.Text, true })
				},
			}
		}},
		{"whatsapp", func(t *testing.T) killPeer {
			const token, secret, user = "EAAGkillAccessToken", "whatsapp-kill-secret", "15553334444"
			wa := whatsapptest.New(token, secret)
			t.Cleanup(wa.Close)
			return killPeer{
				configure: map[string]any{"access_token": token, "app_secret": secret, "verify_token": "kill-verify",
					"phone_number_id": wa.PhoneNumberID, "api_url": wa.URL + "/" + whatsapptest.Version},
				chat: user,
				inbound: func(t *testing.T, webhook, text string) {
					if code, err := wa.Deliver(webhook, whatsapptest.Inbound{From: user, Text: text}); err != nil || code/100 != 2 {
						t.Fatalf("whatsapp notification: %d %v", code, err)
					}
				},
				down: wa.SetDown,
				sent: func() []string {
					return texts(wa.Sent(user), func(s whatsapptest.Sent) (string, bool) { return s.Body, true })
				},
			}
		}},
		{"webhook", func(t *testing.T) killPeer {
			const secret = "0123456789abcdef-kill"
			rcv := webhooktest.NewReceiver(secret)
			t.Cleanup(rcv.Close)
			return killPeer{
				configure: map[string]any{"token": secret, "callback_url": rcv.URL},
				chat:      "s",
				inbound: func(t *testing.T, webhook, text string) {
					if code, err := webhooktest.Send(webhook, secret, webhooktest.Inbound{SenderID: "s", Message: text}); err != nil || code/100 != 2 {
						t.Fatalf("signed inbound: %d %v", code, err)
					}
				},
				down: rcv.SetDown,
				sent: func() (out []string) {
					for _, c := range rcv.Got() {
						if c.RecipientID == "s" {
							out = append(out, c.Message)
						}
					}
					return out
				},
			}
		}},
		{"email", func(t *testing.T) killPeer {
			im, sm := startKillIMAP(t), emailtest.StartSMTP(t)
			ih, ip, _ := net.SplitHostPort(im.addr)
			sh, sp, _ := net.SplitHostPort(sm.Addr)
			return killPeer{
				configure: map[string]any{"username": killMailBot, "token": killMailPass, "imap_host": ih, "imap_port": ip,
					"smtp_host": sh, "smtp_port": sp, "imap_security": "none", "smtp_security": "none"},
				chat:    "ann@fangd.test",
				inbound: func(t *testing.T, _, text string) { im.deliver(t, "ann@fangd.test", text) },
				down:    sm.SetDown, // SMTP answers 451; IMAP stays up
				sent:    func() []string { return sm.Bodies(t, "ann@fangd.test") },
			}
		}},
		{"irc", func(t *testing.T) killPeer {
			irc := startKillIRC(t)
			return killPeer{
				configure: map[string]any{"server": "127.0.0.1", "port": irc.Port, "nick": "fangdbot", "use_tls": false,
					"server_password": irctest.Password},
				chat:    "alice",
				inbound: func(_ *testing.T, _, text string) { irc.say(text) },
				down:    switchDown(irc.down, irc.up), // the server stops (the links with it) and comes back with alice online
				sent:    irc.sent,
			}
		}},
		{"xmpp", func(t *testing.T) killPeer {
			x := startKillXMPP(t)
			return killPeer{
				configure: map[string]any{"jid": "bot@localhost", "token": "botpw", "server": "127.0.0.1", "port": x.Port,
					"starttls": false},
				chat:    "alice@localhost",
				inbound: func(t *testing.T, _, text string) { x.say(t, text) },
				down:    switchDown(x.down, x.up), // prosody stops and comes back with alice online
				sent:    x.sent,
			}
		}},
	}
}

// TestChannelRepliesQueuedAcrossKill9 runs, per adapter: configure through
// the API -> connected -> a user message answered by the agent (fake LLM)
// reaches the platform; then the platform goes down while the agent
// answers a second message, a comms message to the same chat is queued
// too, outbox_pending says 2, the daemon is killed with SIGKILL, the
// platform comes back, the daemon restarts on the same home, and the chat
// must show exactly the three texts in order: no loss, no duplicate (the
// queued ones never reached the platform before the kill, so at-least-once
// delivery has nothing to repeat).
func TestChannelRepliesQueuedAcrossKill9(t *testing.T) {
	for _, c := range killCases() {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			runKillCase(t, c)
		})
	}
}

func runKillCase(t *testing.T, c killCase) {
	oai, _, config := fakes(t, loopbackPolicy)
	peer := c.peer(t)
	var logs []*bytes.Buffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("delivered to the platform: %q", peer.sent())
			for i, l := range logs {
				t.Logf("daemon %d log:\n%s", i+1, l)
			}
		}
	})
	home := t.TempDir()
	env := append([]string{"FANGD_API_KEY=" + e2eKey}, keyEnv...)
	p := startFangd(t, home, config, env...)
	logs = append(logs, p.stderr)
	if code, body := p.request(t, "POST", "/api/agents", `{"name":"helper","model":"fakeoai/gpt-test"}`); code != 201 {
		t.Fatalf("create agent: %d %s", code, body)
	}
	cfg := map[string]any{"agent_name": "helper"}
	for k, v := range peer.configure {
		cfg[k] = v
	}
	b, _ := json.Marshal(cfg)
	if code, body := p.request(t, "POST", "/api/channels/"+c.name+"/configure", string(b)); code != 200 {
		t.Fatalf("configure: %d %s", code, body)
	}
	waitChannels(t, p, "connected", connected(c.name))
	if peer.ready != nil {
		eventually(t, 20*time.Second, "the platform sees the bot listening", peer.ready)
	}
	webhook := p.url + "/channels/" + c.name + "/webhook"

	// The whole path works before anything breaks.
	peer.inbound(t, webhook, "first question")
	eventually(t, 20*time.Second, "the first reply", func() bool { return len(peer.sent()) >= 1 })
	waitChannels(t, p, "the first reply off the outbox", func(m map[string]map[string]any) bool {
		n, _ := m[c.name]["outbox_pending"].(float64)
		return n == 0
	})
	asked := len(oai.Requests())

	// The platform fails while the agent thinks: the reply is queued.
	oai.SetReply(func(llmtest.Request) string {
		peer.down(true)
		return "the answer you waited for"
	})
	peer.inbound(t, webhook, "second question")
	eventually(t, 20*time.Second, "the agent asked", func() bool { return len(oai.Requests()) > asked })
	waitChannels(t, p, "the reply queued", func(m map[string]map[string]any) bool {
		n, _ := m[c.name]["outbox_pending"].(float64)
		return n == 1
	})
	code, body := p.request(t, "POST", "/api/comms/send",
		fmt.Sprintf(`{"to":"channel:%s:%s","content":"a note queued by comms","from":"ops-team"}`, c.name, peer.chat))
	if code != 200 || !strings.Contains(string(body), `"status":"queued"`) {
		t.Fatalf("comms send: %d %s", code, body)
	}
	waitChannels(t, p, "both queued", func(m map[string]map[string]any) bool {
		n, _ := m[c.name]["outbox_pending"].(float64)
		return n == 2
	})
	turns := len(oai.Requests())

	p.stop(t, syscall.SIGKILL)
	peer.down(false)
	p = startFangd(t, home, config, env...)
	logs = append(logs, p.stderr)

	want := []string{"echo: first question", "the answer you waited for", "a note queued by comms"}
	eventually(t, 30*time.Second, "the queued replies after kill -9", func() bool { return len(peer.sent()) >= len(want) })
	waitChannels(t, p, "outbox drained", func(m map[string]map[string]any) bool {
		n, _ := m[c.name]["outbox_pending"].(float64)
		return n == 0 && m[c.name]["status"] == "connected"
	})
	if got := peer.sent(); strings.Join(got, "\x00") != strings.Join(want, "\x00") {
		t.Fatalf("delivered %q, want %q", got, want)
	}
	if n := len(oai.Requests()); n != turns {
		t.Fatalf("the agent was asked %d more times after the restart; the answered message must not run again", n-turns)
	}
}

// Email peers: go-imap's in-memory IMAP server and emailtest's SMTP server,
// which records mail and can refuse it (451) for an outage.

const (
	killMailBot  = emailtest.Bot
	killMailPass = emailtest.Password
)

type killIMAP struct {
	addr string
	user *imapmemserver.User
}

func startKillIMAP(t *testing.T) *killIMAP {
	mem := imapmemserver.New()
	p := &killIMAP{user: imapmemserver.NewUser(killMailBot, killMailPass)}
	p.user.Create("INBOX", nil)
	mem.AddUser(p.user)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	srv := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return idleFlush{mem.NewSession().(imapserver.SessionIMAP4rev2)}, nil, nil
		},
		Caps:         imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapIMAP4rev2: {}, imap.CapIdle: {}},
		InsecureAuth: true,
	})
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return p
}

// idleFlush reports mail that arrived since the last command when IDLE
// starts, as real servers (Dovecot) do; imapmemserver would hold it back
// until the next change, and a mail landing between the adapter's FETCH
// and its IDLE would wait for the 25-minute IDLE refresh.
type idleFlush struct{ imapserver.SessionIMAP4rev2 }

func (s idleFlush) Idle(w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	if err := s.SessionIMAP4rev2.Poll(w, true); err != nil {
		return err
	}
	return s.SessionIMAP4rev2.Idle(w, stop)
}

var killMailSeq atomic.Int64

func (p *killIMAP) deliver(t *testing.T, from, body string) {
	id := fmt.Sprintf("<q%d@fangd.test>", killMailSeq.Add(1))
	raw := fmt.Sprintf("From: Ann <%s>\r\nTo: %s\r\nSubject: question\r\nMessage-ID: %s\r\nDate: %s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n",
		from, killMailBot, id, time.Now().Format(time.RFC1123Z), body)
	if _, err := p.user.Append("INBOX", bytes.NewReader([]byte(raw)), &imap.AppendOptions{Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
}

// switchDown is a real-server peer's outage switch: true stops the server,
// false starts it again with the human back online before anything is sent.
func switchDown(down, up func()) func(bool) {
	return func(d bool) {
		if d {
			down()
			return
		}
		up()
	}
}
