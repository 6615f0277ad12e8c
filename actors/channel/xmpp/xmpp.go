// Package xmpp is the XMPP adapter on github.com/xmppo/go-xmpp: one-to-one
// chat and multi-user chat rooms (XEP-0045), STARTTLS or direct TLS, XEP-0199
// ping as the probe.
package xmpp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	goxmpp "github.com/xmppo/go-xmpp"

	"github.com/fangd/fangd/actors/channel"
)

// Adapter is one XMPP account.
type Adapter struct {
	opts           goxmpp.Options
	jid            string // bare
	rooms          map[string]bool
	roomNick       string
	requireMention bool

	mu     sync.Mutex
	client *goxmpp.Client
	pongs  chan struct{}
	// wmu serialises writes: go-xmpp's Client has no lock of its own.
	wmu sync.Mutex
}

// New builds the adapter (no I/O).
func New(cfg *channel.Config) (channel.Adapter, error) {
	jid := cfg.Text("jid")
	local, domain, ok := strings.Cut(jid, "@")
	if !ok || local == "" || domain == "" || strings.ContainsAny(jid, " /") {
		return nil, &channel.FieldError{Field: "jid", Msg: "must be a bare JID like bot@example.org"}
	}
	host := cfg.Text("server")
	if host == "" {
		host = domain
	}
	if strings.ContainsAny(host, "/ ") {
		return nil, &channel.FieldError{Field: "server", Msg: "must be a host name"}
	}
	port := cfg.Int("port")
	if port <= 0 || port > 65535 {
		return nil, &channel.FieldError{Field: "port", Msg: "must be between 1 and 65535"}
	}
	useTLS, startTLS := cfg.Bool("use_tls"), cfg.Bool("starttls")
	a := &Adapter{jid: strings.ToLower(jid), rooms: map[string]bool{}, roomNick: cfg.Text("room_nick"),
		requireMention: cfg.Bool("require_mention")}
	if a.roomNick == "" {
		a.roomNick = local
	}
	for _, r := range cfg.List("rooms") {
		if !strings.Contains(r, "@") || strings.Contains(r, "/") {
			return nil, &channel.FieldError{Field: "rooms", Msg: fmt.Sprintf("%q is not a room JID (room@conference.example.org)", r)}
		}
		a.rooms[strings.ToLower(r)] = true
	}
	a.opts = goxmpp.Options{
		Host:     net.JoinHostPort(host, strconv.Itoa(port)),
		User:     jid,
		Password: cfg.Secret("password"),
		Resource: "fangd",
		// Direct TLS when use_tls; otherwise STARTTLS, required unless
		// turned off (then plain auth over an unencrypted link is allowed,
		// for a server on loopback).
		NoTLS:                        !useTLS,
		StartTLS:                     !useTLS && startTLS,
		InsecureAllowUnencryptedAuth: !useTLS && !startTLS,
		TLSConfig:                    &tls.Config{ServerName: domain, InsecureSkipVerify: cfg.Bool("tls_insecure_skip_verify"), MinVersion: tls.VersionTLS12},
		Session:                      true,
		Status:                       "chat",
		DialTimeout:                  20 * time.Second,
	}
	if a.opts.InsecureAllowUnencryptedAuth {
		// With no TLS there is no channel to bind SCRAM to; go-xmpp's
		// SCRAM over plain TCP then fails against prosody.
		a.opts.Mechanism = "PLAIN"
	}
	return a, nil
}

// Capabilities: XMPP has no hard length limit, but servers cap stanzas
// (prosody: 256 KiB by default); keep messages readable.
func (a *Adapter) Capabilities() channel.Capabilities {
	return channel.Capabilities{MaxMessageLength: 10000, Threads: true, Markdown: "none",
		Pace: channel.Pace{PerSecond: 5, Burst: 10}}
}

// Run logs in, joins the rooms and reads stanzas until the stream ends.
func (a *Adapter) Run(ctx context.Context, h channel.Host) error {
	type result struct {
		c   *goxmpp.Client
		err error
	}
	ch := make(chan result, 1)
	go func() { c, err := a.opts.NewClient(); ch <- result{c, err} }()
	var c *goxmpp.Client
	select {
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.c != nil {
				r.c.Close()
			}
		}()
		return nil
	case r := <-ch:
		if r.err != nil {
			return classify(r.err)
		}
		c = r.c
	}
	a.mu.Lock()
	a.client, a.pongs = c, make(chan struct{}, 1)
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.client = nil
		a.mu.Unlock()
		// Only now, with Recv no longer running: go-xmpp's Close reads
		// from the stream, which is not safe beside a Recv.
		a.wmu.Lock()
		c.Close()
		a.wmu.Unlock()
	}()
	// To stop, end our stream: the server closes its side and Recv
	// returns.
	stop := context.AfterFunc(ctx, func() {
		a.wmu.Lock()
		c.SendOrg("</stream:stream>")
		a.wmu.Unlock()
	})
	defer stop()
	for room := range a.rooms {
		a.wmu.Lock()
		_, err := c.JoinMUCNoHistory(room, a.roomNick)
		a.wmu.Unlock()
		if err != nil {
			return err
		}
	}
	h.Connected(channel.Identity{ID: a.jid, Name: a.jid})
	for {
		st, err := c.Recv()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return classify(err)
		}
		switch v := st.(type) {
		case goxmpp.Chat:
			in, ok := a.inbound(v)
			if !ok {
				h.Alive()
				continue
			}
			if err := h.Deliver(ctx, in); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
		case goxmpp.IQ:
			h.Alive()
			if v.Type == "result" || v.Type == "error" {
				select {
				case a.pongs <- struct{}{}:
				default:
				}
			}
		default:
			h.Alive()
		}
	}
}

// classify marks authentication failures permanent.
func classify(err error) error {
	msg := err.Error()
	if strings.Contains(msg, "auth failure") || strings.Contains(msg, "not-authorized") ||
		strings.Contains(msg, "no viable authentication method") || strings.Contains(msg, "refusing to authenticate") {
		return channel.Permanent(fmt.Errorf("XMPP login failed: %s", msg))
	}
	return err
}

func bare(jid string) string {
	b, _, _ := strings.Cut(jid, "/")
	return strings.ToLower(b)
}

func resource(jid string) string {
	_, r, _ := strings.Cut(jid, "/")
	return r
}

// inbound turns a chat stanza into a message, skipping our own room
// echoes, room history, subjects and empty bodies.
func (a *Adapter) inbound(v goxmpp.Chat) (channel.Inbound, bool) {
	text := strings.TrimSpace(v.Text)
	if text == "" || (v.Type != "chat" && v.Type != "groupchat" && v.Type != "normal" && v.Type != "") {
		return channel.Inbound{}, false
	}
	if !v.Stamp.IsZero() { // delayed delivery: history or offline storage of a room
		if v.Type == "groupchat" {
			return channel.Inbound{}, false
		}
	}
	in := channel.Inbound{Text: text, MessageID: v.ID, ThreadID: v.Thread}
	if v.Type == "groupchat" {
		room, nick := bare(v.Remote), resource(v.Remote)
		if nick == "" || strings.EqualFold(nick, a.roomNick) {
			return channel.Inbound{}, false
		}
		in.ChatID, in.UserID, in.UserName = room, v.Remote, nick
		if a.requireMention {
			rest, ok := addressed(text, a.roomNick)
			if !ok {
				return channel.Inbound{}, false
			}
			in.Text = rest
		}
		return in, true
	}
	from := bare(v.Remote)
	if from == a.jid {
		return channel.Inbound{}, false
	}
	in.ChatID, in.UserID, in.UserName, in.Direct = from, from, from, true
	return in, true
}

// addressed reports whether text starts with "nick:" or "nick,".
func addressed(text, nick string) (string, bool) {
	if len(text) <= len(nick) || !strings.EqualFold(text[:len(nick)], nick) {
		return "", false
	}
	rest := text[len(nick):]
	if rest[0] != ':' && rest[0] != ',' {
		return "", false
	}
	return strings.TrimSpace(rest[1:]), true
}

func (a *Adapter) live() *goxmpp.Client {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.client
}

// Send sends a chat message, or a groupchat message to a joined room.
func (a *Adapter) Send(_ context.Context, m channel.Outbound) (string, error) {
	c := a.live()
	if c == nil {
		return "", errors.New("not connected to the XMPP server")
	}
	to := strings.TrimSpace(m.ChatID)
	if !strings.Contains(to, "@") && !strings.Contains(to, ".") {
		return "", channel.Rejected(fmt.Errorf("%q is not a JID", to))
	}
	typ := "chat"
	if a.rooms[bare(to)] {
		typ, to = "groupchat", bare(to)
	}
	a.wmu.Lock()
	defer a.wmu.Unlock()
	_, _, err := c.Send(goxmpp.Chat{Remote: to, Type: typ, Text: m.Text, Thread: m.ThreadID})
	return "", err
}

// Probe sends an XEP-0199 ping to the server and waits for the answer.
func (a *Adapter) Probe(ctx context.Context) (channel.Identity, error) {
	a.mu.Lock()
	c, pongs := a.client, a.pongs
	a.mu.Unlock()
	if c == nil {
		return channel.Identity{}, errors.New("not connected to the XMPP server")
	}
	for len(pongs) > 0 { // drop a stale answer
		<-pongs
	}
	a.wmu.Lock()
	err := c.PingC2S("", "")
	a.wmu.Unlock()
	if err != nil {
		return channel.Identity{}, err
	}
	select {
	case <-pongs:
		return channel.Identity{ID: a.jid, Name: a.jid}, nil
	case <-ctx.Done():
		return channel.Identity{}, errors.New("the XMPP server did not answer the ping")
	}
}
