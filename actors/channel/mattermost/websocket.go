package mattermost

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/fangd/fangd/actors/channel"
)

// Websocket timing: the client pings every pingEvery; a link that carries
// nothing (not even a pong) for readTimeout is dead.
const (
	pingEvery   = 30 * time.Second
	readTimeout = 75 * time.Second
)

// event is one message on the v4 websocket: either an event or the reply
// to one of our actions (status/seq_reply).
type event struct {
	Event    string          `json:"event"`
	Data     json.RawMessage `json:"data"`
	Status   string          `json:"status"`
	SeqReply int64           `json:"seq_reply"`
	Error    *appError       `json:"error"`
}

// postedData is the data of a "posted" event; post is JSON inside a string.
type postedData struct {
	ChannelType string `json:"channel_type"`
	Post        string `json:"post"`
	SenderName  string `json:"sender_name"`
	TeamID      string `json:"team_id"`
}

// Run checks the token, opens the websocket (authenticated by header, and
// by an authentication_challenge for servers that ignore the header), and
// delivers "posted" events until ctx ends or the socket fails.
func (a *Adapter) Run(ctx context.Context, host channel.Host) error {
	me, err := a.Probe(ctx)
	if err != nil {
		return err
	}
	wsURL := "ws" + strings.TrimPrefix(a.server, "http") + "/api/v4/websocket"
	dialer := websocket.Dialer{HandshakeTimeout: 20 * time.Second, Proxy: http.ProxyFromEnvironment}
	if a.dial != nil {
		dialer.Proxy, dialer.NetDialContext = nil, a.dial
	}
	conn, resp, err := dialer.DialContext(ctx, wsURL, http.Header{"Authorization": {"Bearer " + a.token}})
	if err != nil {
		if resp != nil {
			return classify(resp, nil)
		}
		return fmt.Errorf("mattermost: websocket: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()

	if err := conn.WriteJSON(map[string]any{"seq": 1, "action": "authentication_challenge",
		"data": map[string]string{"token": a.token}}); err != nil {
		return fmt.Errorf("mattermost: websocket: %w", err)
	}
	alive := func() {
		_ = conn.SetReadDeadline(time.Now().Add(readTimeout))
		host.Alive()
	}
	_ = conn.SetReadDeadline(time.Now().Add(readTimeout))
	conn.SetPongHandler(func(string) error { alive(); return nil })
	conn.SetPingHandler(func(data string) error {
		alive()
		return conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(5*time.Second))
	})
	pingDone := make(chan struct{})
	defer close(pingDone)
	go func() {
		t := time.NewTicker(pingEvery)
		defer t.Stop()
		for {
			select {
			case <-pingDone:
				return
			case <-t.C:
				if conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(5*time.Second)) != nil {
					return
				}
			}
		}
	}()

	connected := false
	var cur cursor
	return channel.ReadFrames(ctx, conn, readTimeout, "mattermost: websocket", func(data []byte) error {
		var ev event
		if json.Unmarshal(data, &ev) != nil {
			return nil
		}
		switch {
		case ev.SeqReply == 1 && ev.Status == "FAIL":
			msg := "websocket authentication failed"
			if ev.Error != nil && ev.Error.Message != "" {
				msg = ev.Error.Message
			}
			return channel.Permanent(errors.New("mattermost: " + msg))
		case ev.Event == "hello":
			if !connected {
				connected = true
				host.Connected(me)
				// Posts made while the socket was down: fetched once the
				// socket is up, so nothing falls in between; the live
				// events for them are dropped by the cursor.
				var err error
				if cur, err = a.catchUp(ctx, host); err != nil {
					return err
				}
			}
			host.Alive()
		case ev.Event == "posted":
			in, p, ok := a.parsePosted(ev.Data)
			if !ok || !cur.after(p) {
				host.Alive()
				return nil
			}
			return a.deliver(ctx, host, &cur, in, p)
		default:
			host.Alive()
		}
		return nil
	})
}

// fullPost is a post as events and post lists carry it.
type fullPost struct {
	post
	CreateAt int64 `json:"create_at"`
	DeleteAt int64 `json:"delete_at"`
}

// parsePosted turns a "posted" event into an inbound message; ok is false
// for the bot's own posts, system messages and empty posts.
func (a *Adapter) parsePosted(raw json.RawMessage) (channel.Inbound, fullPost, bool) {
	var d postedData
	var p fullPost
	if json.Unmarshal(raw, &d) != nil || d.Post == "" || json.Unmarshal([]byte(d.Post), &p) != nil {
		return channel.Inbound{}, p, false
	}
	in, ok := a.inbound(p, strings.TrimPrefix(d.SenderName, "@"), d.TeamID, d.ChannelType == "D")
	return in, p, ok
}

// inbound builds the message for a post, or ok=false for posts that are
// not a user talking: the bot's own (the server echoes them), system posts
// ("system_join_channel" and friends have a type), deleted and empty ones.
func (a *Adapter) inbound(p fullPost, sender, team string, direct bool) (channel.Inbound, bool) {
	if p.UserID == "" || p.UserID == a.self() || p.Type != "" || p.DeleteAt != 0 || strings.TrimSpace(p.Message) == "" {
		return channel.Inbound{}, false
	}
	at := time.Now()
	if p.CreateAt > 0 {
		at = time.UnixMilli(p.CreateAt)
	}
	if sender == "" {
		sender = p.UserID
	}
	return channel.Inbound{ChatID: p.ChannelID, Space: team, UserID: p.UserID, UserName: sender, Text: p.Message,
		MessageID: p.ID, ThreadID: p.RootID, Direct: direct, At: at}, true
}

// cursor is the newest post handed to the agent: its create_at (ms) and id.
// It is saved after every delivery, so a reconnect or restart asks the
// server for what came after it.
type cursor struct {
	ms int64
	id string
}

const cursorKey = "last_post"

func loadCursor(host channel.Host) (cursor, error) {
	v, err := host.Cursor(cursorKey)
	if err != nil || v == "" {
		return cursor{}, err
	}
	msStr, id, _ := strings.Cut(v, ":")
	ms, _ := strconv.ParseInt(msStr, 10, 64)
	return cursor{ms: ms, id: id}, nil
}

// after reports whether p is newer than the cursor (a zero cursor takes
// everything).
func (c cursor) after(p fullPost) bool {
	return p.CreateAt > c.ms || (p.CreateAt == c.ms && p.ID != c.id && c.ms != 0) || c.ms == 0
}

func (a *Adapter) deliver(ctx context.Context, host channel.Host, cur *cursor, in channel.Inbound, p fullPost) error {
	if p.CreateAt < cur.ms {
		if err := host.Deliver(ctx, in); err != nil {
			return fmt.Errorf("mattermost: deliver: %w", err)
		}
		return nil
	}
	// The post and the cursor past it are stored in one write.
	next := channel.Cursor{Key: cursorKey, Value: strconv.FormatInt(p.CreateAt, 10) + ":" + p.ID}
	if err := host.DeliverAndSave(ctx, next, in); err != nil {
		return fmt.Errorf("mattermost: deliver: %w", err)
	}
	*cur = cursor{ms: p.CreateAt, id: p.ID}
	return nil
}

// catchUp delivers posts newer than the saved cursor from every channel
// the bot is in that has had a post since (one request per such channel).
// On the very first start there is no cursor and history is not replayed.
func (a *Adapter) catchUp(ctx context.Context, host channel.Host) (cursor, error) {
	cur, err := loadCursor(host)
	if err != nil || cur.ms == 0 {
		return cursor{}, err
	}
	var chans []struct {
		ID         string `json:"id"`
		TeamID     string `json:"team_id"`
		Type       string `json:"type"`
		LastPostAt int64  `json:"last_post_at"`
	}
	if err := a.call(ctx, http.MethodGet, "/api/v4/users/me/channels", nil, &chans); err != nil {
		return cur, err
	}
	type item struct {
		p      fullPost
		team   string
		direct bool
	}
	var missed []item
	for _, c := range chans {
		if c.LastPostAt < cur.ms {
			continue
		}
		var list struct {
			Posts map[string]fullPost `json:"posts"`
		}
		// since is inclusive of edits; create_at filters those out below.
		path := "/api/v4/channels/" + url.PathEscape(c.ID) + "/posts?since=" + strconv.FormatInt(cur.ms-1, 10)
		if err := a.call(ctx, http.MethodGet, path, nil, &list); err != nil {
			return cur, err
		}
		for _, p := range list.Posts {
			if cur.after(p) {
				missed = append(missed, item{p, c.TeamID, c.Type == "D"})
			}
		}
	}
	sort.Slice(missed, func(i, j int) bool { return missed[i].p.CreateAt < missed[j].p.CreateAt })
	// Post lists carry user ids only; allow-lists may name users, so look
	// the senders' usernames up (one request).
	names := map[string]string{}
	var ids []string
	for _, m := range missed {
		if _, seen := names[m.p.UserID]; !seen && m.p.UserID != a.self() {
			names[m.p.UserID] = ""
			ids = append(ids, m.p.UserID)
		}
	}
	if len(ids) > 0 {
		var users []user
		if err := a.call(ctx, http.MethodPost, "/api/v4/users/ids", ids, &users); err != nil {
			return cur, err
		}
		for _, u := range users {
			names[u.ID] = u.Username
		}
	}
	for _, m := range missed {
		in, ok := a.inbound(m.p, names[m.p.UserID], m.team, m.direct)
		if !ok {
			continue
		}
		if err := a.deliver(ctx, host, &cur, in, m.p); err != nil {
			return cur, err
		}
	}
	return cur, nil
}
