package mattermost

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
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
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("mattermost: websocket: %w", err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(readTimeout))
		var ev event
		if json.Unmarshal(data, &ev) != nil {
			continue
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
			}
			host.Alive()
		case ev.Event == "posted":
			in, ok := a.parsePosted(ev.Data)
			if !ok {
				host.Alive()
				continue
			}
			if err := host.Deliver(ctx, in); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("mattermost: deliver: %w", err)
			}
		default:
			host.Alive()
		}
	}
}

// parsePosted turns a "posted" event into an inbound message; ok is false
// for the bot's own posts, system messages and empty posts.
func (a *Adapter) parsePosted(raw json.RawMessage) (channel.Inbound, bool) {
	var d postedData
	if json.Unmarshal(raw, &d) != nil || d.Post == "" {
		return channel.Inbound{}, false
	}
	var p struct {
		post
		CreateAt int64 `json:"create_at"`
	}
	if json.Unmarshal([]byte(d.Post), &p) != nil {
		return channel.Inbound{}, false
	}
	// The server echoes the bot's own posts; system posts ("system_join_channel"
	// and friends) have a type.
	if p.UserID == "" || p.UserID == a.self() || p.Type != "" || strings.TrimSpace(p.Message) == "" {
		return channel.Inbound{}, false
	}
	at := time.Now()
	if p.CreateAt > 0 {
		at = time.UnixMilli(p.CreateAt)
	}
	return channel.Inbound{
		ChatID:    p.ChannelID,
		Space:     d.TeamID,
		UserID:    p.UserID,
		UserName:  strings.TrimPrefix(d.SenderName, "@"),
		Text:      p.Message,
		MessageID: p.ID,
		ThreadID:  p.RootID,
		Direct:    d.ChannelType == "D",
		At:        at,
	}, true
}
