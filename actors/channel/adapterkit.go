package channel

// What several adapters do alike, written once: URL settings, being
// addressed in a room, running without a connection of their own.

import (
	"context"
	"errors"
	"net/url"
	"strings"
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
