// Package xmpp is the XMPP adapter on github.com/xmppo/go-xmpp: one-to-one
// chat and multi-user chat rooms (XEP-0045), STARTTLS or direct TLS, XEP-0199
// ping as the probe.
//
// Room joins are checked: the room's answer to our join presence is either
// our own presence in it (joined) or a presence error, and a room that did
// not let us in makes the channel "degraded" with the room named in
// last_error. When we own a room (we just created it, so the server holds
// it locked until it is configured, XEP-0045 10.1.2), we submit the
// default configuration ("instant room"), which unlocks it for everyone
// else. A private message from a room occupant (room@service/nick, type
// chat) is answered privately to that occupant, never in the room.
package xmpp

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/xml"
	"errors"
	"fmt"
	"net"
	"slices"
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
	// joins is each configured room's state on this link: "" while the
	// join is unanswered, "joined", or why we are not in it. Only Run's
	// goroutine touches it.
	joins map[string]string
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
	a.joins = map[string]string{}
	for room := range a.rooms {
		a.joins[room] = ""
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
		case goxmpp.Presence:
			h.Alive()
			if err := a.roomPresence(c, h, v); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
		case goxmpp.IQ:
			h.Alive()
			if room, ok := strings.CutPrefix(v.ID, configIQ); ok {
				a.roomConfigured(h, room, v)
				continue
			}
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

// configIQ prefixes the id of the instant-room form we submit; the rest
// is the room.
const configIQ = "fangd-room-config:"

// roomPresence follows our own presence in the configured rooms: joined,
// refused (a presence error), or gone (kicked, room destroyed).
func (a *Adapter) roomPresence(c *goxmpp.Client, h channel.Host, p goxmpp.Presence) error {
	room := bare(p.From)
	if _, ok := a.joins[room]; !ok || !strings.EqualFold(resource(p.From), a.roomNick) {
		return nil
	}
	switch p.Type {
	case "error":
		cond := p.Error
		if cond == "" {
			cond = "refused"
		}
		a.joins[room] = "could not join room " + room + ": " + cond
	case "unavailable":
		a.joins[room] = "left room " + room + " (kicked, banned or the room was closed)"
	default:
		if a.joins[room] == "joined" {
			return nil // a presence update while in the room
		}
		a.joins[room] = "joined"
		if p.Affiliation == "owner" {
			// We own the room, and when we have just created it the
			// server keeps it locked (item-not-found for everyone else)
			// until it is configured. An empty submitted form accepts
			// the defaults (XEP-0045 10.1.2); for an existing room it
			// changes nothing.
			var esc bytes.Buffer
			xml.EscapeText(&esc, []byte(room))
			a.wmu.Lock()
			_, err := c.SendOrg("<iq type='set' to='" + esc.String() + "' id='" + configIQ + esc.String() + "'>" +
				"<query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'/></query></iq>")
			a.wmu.Unlock()
			if err != nil {
				return err
			}
		}
	}
	a.reportRooms(h)
	return nil
}

// roomConfigured notes the answer to the instant-room form.
func (a *Adapter) roomConfigured(h channel.Host, room string, iq goxmpp.IQ) {
	if iq.Type != "error" {
		return
	}
	if _, ok := a.joins[room]; ok {
		a.joins[room] = "room " + room + " stays locked: the server refused its default configuration"
		a.reportRooms(h)
	}
}

// reportRooms tells the runtime which rooms are not working.
func (a *Adapter) reportRooms(h channel.Host) {
	var bad []string
	for _, st := range a.joins {
		if st != "" && st != "joined" {
			bad = append(bad, st)
		}
	}
	slices.Sort(bad)
	h.Degraded(strings.Join(bad, "; "))
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
			rest, ok := channel.Addressed(text, a.roomNick)
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
	if a.rooms[from] {
		// A private message from a room occupant (XEP-0045 7.5): only
		// the full room@service/nick reaches them, and the reply must go
		// there, privately, not to the room.
		nick := resource(v.Remote)
		if nick == "" || strings.EqualFold(nick, a.roomNick) {
			return channel.Inbound{}, false // the room itself, or our own echo
		}
		in.ChatID, in.UserID, in.UserName, in.Direct = from+"/"+nick, from+"/"+nick, nick, true
		return in, true
	}
	in.ChatID, in.UserID, in.UserName, in.Direct = from, from, from, true
	return in, true
}

func (a *Adapter) live() *goxmpp.Client {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.client
}

// Send sends a groupchat message to a configured room (a bare room JID),
// and a chat message to anyone else, including an occupant's full
// room@service/nick (a private message in the room).
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
	if resource(to) == "" && a.rooms[strings.ToLower(to)] {
		typ, to = "groupchat", strings.ToLower(to)
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
