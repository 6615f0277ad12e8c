// Package matrix is the Matrix adapter on maunium.net/go/mautrix: a
// client-server API sync loop driven one /sync at a time (so reconnects and
// backoff stay with the runtime), the next_batch token kept durably,
// invites accepted, replies threaded with m.in_reply_to / m.thread.
package matrix

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/fangd/fangd/actors/channel"
)

// pollSecs is the long-poll timeout of /sync.
const pollSecs = 30

// Adapter is one Matrix account.
type Adapter struct {
	cli      *mautrix.Client
	autoJoin bool
}

// New builds the adapter (no I/O).
func New(cfg *channel.Config) (channel.Adapter, error) {
	hs, err := cfg.BaseURL("homeserver_url", "")
	if err != nil {
		return nil, err
	}
	uid := cfg.Text("user_id")
	if uid != "" {
		if _, _, err := id.UserID(uid).Parse(); err != nil {
			return nil, &channel.FieldError{Field: "user_id", Msg: "must look like @bot:example.org"}
		}
	}
	cli, err := mautrix.NewClient(hs, id.UserID(uid), cfg.Secret("access_token"))
	if err != nil {
		return nil, &channel.FieldError{Field: "homeserver_url", Msg: err.Error()}
	}
	// The runtime retries; mautrix must not retry on its own.
	cli.DefaultHTTPRetries = 0
	cli.Client = cfg.HTTPClient((pollSecs + 15) * time.Second)
	return &Adapter{cli: cli, autoJoin: cfg.Bool("auto_join")}, nil
}

// Capabilities: Matrix events may be up to 65536 bytes; stay well inside.
// Homeservers rate-limit senders (M_LIMIT_EXCEEDED with retry_after_ms).
func (a *Adapter) Capabilities() channel.Capabilities {
	return channel.Capabilities{MaxMessageLength: 16000, Threads: true, Edits: true, Markdown: "markdown",
		Pace: channel.Pace{PerSecond: 5, Burst: 10, ChatInterval: 200 * time.Millisecond, ChatBurst: 5}}
}

// classify maps a mautrix error onto the runtime's classes.
func classify(err error) error {
	var he mautrix.HTTPError
	if errors.As(err, &he) && he.RespError != nil {
		re := he.RespError
		msg := fmt.Errorf("%s: %s", re.ErrCode, re.Err)
		switch {
		case re.ErrCode == "M_UNKNOWN_TOKEN" || re.ErrCode == "M_MISSING_TOKEN" || re.StatusCode == http.StatusUnauthorized:
			return channel.Permanent(msg)
		case re.ErrCode == "M_LIMIT_EXCEEDED" || re.StatusCode == http.StatusTooManyRequests:
			wait := time.Second
			if ms, ok := re.ExtraData["retry_after_ms"].(float64); ok && ms > 0 {
				wait = time.Duration(ms) * time.Millisecond
			}
			return channel.RetryAfter(msg, wait)
		case re.StatusCode >= 500:
			return msg
		case re.ErrCode == "M_FORBIDDEN" || re.ErrCode == "M_NOT_FOUND" || re.StatusCode >= 400:
			return channel.Rejected(msg)
		}
		return msg
	}
	if errors.As(err, &he) && he.Response != nil {
		return channel.HTTPStatusError(he.Response.StatusCode, he.Message, 0)
	}
	return err
}

// Probe is /account/whoami.
func (a *Adapter) Probe(ctx context.Context) (channel.Identity, error) {
	resp, err := a.cli.Whoami(ctx)
	if err != nil {
		return channel.Identity{}, classify(err)
	}
	return channel.Identity{ID: resp.UserID.String(), Name: resp.UserID.String()}, nil
}

// Run checks the token, then syncs until ctx ends.
func (a *Adapter) Run(ctx context.Context, h channel.Host) error {
	me, err := a.Probe(ctx)
	if err != nil {
		return err
	}
	a.cli.UserID = id.UserID(me.ID)
	since, err := h.Cursor("next_batch")
	if err != nil {
		return err
	}
	if since == "" {
		// First start: skip the backlog; answer only what arrives from now.
		resp, err := a.cli.FullSyncRequest(ctx, mautrix.ReqSync{Timeout: 0, FilterID: `{"room":{"timeline":{"limit":1}}}`})
		if err != nil {
			return classify(err)
		}
		if err := a.join(ctx, resp); err != nil {
			return err
		}
		since = resp.NextBatch
		if err := h.SaveCursor("next_batch", since); err != nil {
			return err
		}
	}
	h.Connected(me)
	for {
		resp, err := a.cli.FullSyncRequest(ctx, mautrix.ReqSync{Timeout: pollSecs * 1000, Since: since})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return classify(err)
		}
		if err := a.join(ctx, resp); err != nil {
			return err
		}
		// The messages and the sync token past them are stored in one
		// write (an empty sync only moves the token).
		next := channel.Cursor{Key: "next_batch", Value: resp.NextBatch}
		if err := h.DeliverAndSave(ctx, next, a.inbound(resp)...); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		since = resp.NextBatch
	}
}

// join accepts invites when auto_join is on.
func (a *Adapter) join(ctx context.Context, resp *mautrix.RespSync) error {
	if !a.autoJoin {
		return nil
	}
	for roomID := range resp.Rooms.Invite {
		if _, err := a.cli.JoinRoomByID(ctx, roomID); err != nil {
			if err := classify(err); channel.IsPermanent(err) {
				return err
			}
		}
	}
	return nil
}

// inbound picks text messages from others out of the joined rooms'
// timelines.
func (a *Adapter) inbound(resp *mautrix.RespSync) []channel.Inbound {
	var out []channel.Inbound
	for roomID, room := range resp.Rooms.Join {
		if room == nil {
			continue
		}
		for _, evt := range room.Timeline.Events {
			if evt.Type != event.EventMessage || evt.Sender == a.cli.UserID {
				continue
			}
			if err := evt.Content.ParseRaw(evt.Type); err != nil && !errors.Is(err, event.ErrContentAlreadyParsed) {
				continue
			}
			c := evt.Content.AsMessage()
			if c == nil || (c.MsgType != event.MsgText && c.MsgType != event.MsgNotice) || strings.TrimSpace(c.Body) == "" {
				continue
			}
			in := channel.Inbound{ChatID: roomID.String(), UserID: evt.Sender.String(), UserName: evt.Sender.String(),
				Text: c.Body, MessageID: evt.ID.String(), At: time.UnixMilli(evt.Timestamp)}
			if c.RelatesTo != nil && c.RelatesTo.Type == event.RelThread {
				in.ThreadID = c.RelatesTo.EventID.String()
			}
			out = append(out, in)
		}
	}
	return out
}

// Send posts an m.text message; m.Key is the transaction id, so a retried
// send is not duplicated by the homeserver.
func (a *Adapter) Send(ctx context.Context, m channel.Outbound) (string, error) {
	if !strings.HasPrefix(m.ChatID, "!") && !strings.HasPrefix(m.ChatID, "#") {
		return "", channel.Rejected(fmt.Errorf("%q is not a room id", m.ChatID))
	}
	content := &event.MessageEventContent{MsgType: event.MsgText, Body: m.Text}
	switch {
	case m.ThreadID != "":
		content.RelatesTo = (&event.RelatesTo{}).SetThread(id.EventID(m.ThreadID), id.EventID(m.ReplyTo))
	case m.ReplyTo != "":
		content.RelatesTo = (&event.RelatesTo{}).SetReplyTo(id.EventID(m.ReplyTo))
	}
	var extra []mautrix.ReqSendEvent
	if m.Key != "" {
		extra = append(extra, mautrix.ReqSendEvent{TransactionID: m.Key})
	}
	resp, err := a.cli.SendMessageEvent(ctx, id.RoomID(m.ChatID), event.EventMessage, content, extra...)
	if err != nil {
		return "", classify(err)
	}
	return resp.EventID.String(), nil
}
