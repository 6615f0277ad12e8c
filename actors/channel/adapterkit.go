package channel

// What several adapters do alike, written once: URL settings, being
// addressed in a room, running without a connection of their own.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

// HTTPURL parses raw as an http(s) URL with a host: the form of every URL
// setting an adapter dials (API bases, callbacks, token endpoints). Its
// error is a FieldError's Msg; the adapter names the field.
func HTTPURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("must be an http(s) URL")
	}
	return u, nil
}

// BaseURL reads URL field key without trailing slashes (an API base that
// paths are appended to) and checks that it is an http(s) URL; its error is
// a FieldError naming key, with example when one is given.
func (c *Config) BaseURL(key, example string) (string, error) {
	u := strings.TrimRight(c.Text(key), "/")
	if _, err := HTTPURL(u); err != nil {
		msg := err.Error()
		if example != "" {
			msg += " such as " + example
		}
		return "", &FieldError{Field: key, Msg: msg}
	}
	return u, nil
}

// ReadFrames is the read loop of an adapter that listens on a websocket
// (Gotify's stream, Mattermost's events): every frame goes to fn, and the
// read deadline moves idle past each one, so a link gone quiet fails. It
// ends with fn's error, or the link's named by what, and with nil once ctx
// has ended (the link was closed under it).
func ReadFrames(ctx context.Context, conn *websocket.Conn, idle time.Duration, what string, fn func(data []byte) error) error {
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			err = fmt.Errorf("%s: %w", what, err)
		} else {
			_ = conn.SetReadDeadline(time.Now().Add(idle))
			err = fn(data)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// Addressed reports whether a room message starts by naming nick ("nick:"
// or "nick,", in any case), and returns the rest: how a bot is spoken to in
// IRC channels and XMPP rooms.
func Addressed(text, nick string) (string, bool) {
	if len(text) <= len(nick) || !strings.EqualFold(text[:len(nick)], nick) {
		return "", false
	}
	rest := text[len(nick):]
	if rest[0] != ':' && rest[0] != ',' {
		return "", false
	}
	return strings.TrimSpace(rest[1:]), true
}

// RunPushed is Run for an adapter whose inbound arrives as webhooks, with
// no connection of its own: it checks the credentials once with probe,
// reports the channel connected and waits until ctx ends.
func RunPushed(ctx context.Context, host Host, probe func(context.Context) (Identity, error)) error {
	id, err := probe(ctx)
	if err != nil {
		return err
	}
	host.Connected(id)
	<-ctx.Done()
	return nil
}

// BearerSendError classifies a refused send of an adapter that sends with
// a cached OAuth bearer token (Teams, Google Chat). A 401 drops the cached
// token, since it may have been revoked, and is transient, so the outbox
// retries with a new one; but a token fetched for this very call that is
// refused means the registration is wrong: permanent. 429 waits
// retryAfter, another 4xx rejects this message, anything else is
// transient. drop is nil when the send carried no token (a 401 is then
// a rejection like any 4xx).
func BearerSendError(err error, status int, retryAfter time.Duration, fetched bool, drop func()) error {
	switch {
	case status == http.StatusUnauthorized && drop != nil:
		drop()
		if fetched {
			return Permanent(err)
		}
		return err
	case status == http.StatusTooManyRequests:
		return RetryAfter(err, retryAfter)
	case status >= 400 && status < 500:
		return Rejected(err)
	}
	return err
}
