package main

// The XMPP peer of the kill -9 test: a real prosody on loopback (installed
// by `make test-deps`, as for actors/channel/xmpp) with two accounts, the
// bot and alice, who uses go-xmpp as her client.

import (
	"strconv"
	"strings"
	"sync"
	"testing"

	goxmpp "github.com/xmppo/go-xmpp"

	"github.com/fangd/fangd/actors/channel/xmpp/xmpptest"
)

type killXMPP struct {
	t *testing.T
	*xmpptest.Prosody

	mu    sync.Mutex // guards alice, got
	alice *goxmpp.Client
	got   []string // what bot@localhost said to alice, over all her sessions
}

func startKillXMPP(t *testing.T) *killXMPP {
	t.Helper()
	p := &killXMPP{t: t, Prosody: xmpptest.NewProsody(t, "")}
	p.up()
	t.Cleanup(p.down)
	return p
}

// up starts prosody and logs alice in.
func (p *killXMPP) up() {
	t := p.t
	p.Start(t)
	c, err := goxmpp.Options{Host: "127.0.0.1:" + strconv.Itoa(p.Port), User: "alice@localhost", Password: "alicepw",
		NoTLS: true, InsecureAllowUnencryptedAuth: true, Mechanism: "PLAIN", Session: true, Resource: "phone"}.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			st, err := c.Recv()
			if err != nil {
				return
			}
			if m, ok := st.(goxmpp.Chat); ok && m.Text != "" && strings.HasPrefix(m.Remote, "bot@localhost") {
				p.mu.Lock()
				p.got = append(p.got, m.Text)
				p.mu.Unlock()
			}
		}
	}()
	p.mu.Lock()
	p.alice = c
	p.mu.Unlock()
}

// down stops prosody, every session with it (setDown(false) starts it
// again with alice online before anything is sent to her).
func (p *killXMPP) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.Stop()
}

func (p *killXMPP) say(t *testing.T, text string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, _, err := p.alice.Send(goxmpp.Chat{Remote: "bot@localhost", Type: "chat", Text: text}); err != nil {
		t.Fatal(err)
	}
}

func (p *killXMPP) sent() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.got...)
}
