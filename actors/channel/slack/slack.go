// Package slack is the Slack adapter on github.com/slack-go/slack: Socket
// Mode for inbound events when an app-level token is set, otherwise the
// Events API delivering to /channels/<name>/webhook (verified with the
// signing secret); the Web API (chat.postMessage, auth.test) for the rest.
// Direct messages are answered; in channels, messages that mention the bot
// (app_mention), in a thread under them.
package slack

//lint:file-ignore ST1005 errors here become the channel's status message and begin with a proper noun (the platform's name, Socket Mode), spelt as the operator knows it.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	goslack "github.com/slack-go/slack"
	"github.com/slack-go/slack/slackevents"
	"github.com/slack-go/slack/socketmode"

	"github.com/fangd/fangd/actors/channel"
)

// Adapter is one Slack app installation.
type Adapter struct {
	api           *goslack.Client
	appToken      string
	signingSecret string
	dial          func(ctx context.Context, network, addr string) (net.Conn, error) // the network policy's, if any

	mu   sync.Mutex
	self string // our bot user id, once known
}

// New builds the adapter (no I/O).
func New(cfg *channel.Config) (channel.Adapter, error) {
	bot, app, signing := cfg.Secret("bot_token"), cfg.Secret("app_token"), cfg.Secret("signing_secret")
	if !strings.HasPrefix(bot, "xoxb-") && !strings.HasPrefix(bot, "xoxp-") {
		return nil, &channel.FieldError{Field: "bot_token", Msg: "must be a bot token (xoxb-...)"}
	}
	if app != "" && !strings.HasPrefix(app, "xapp-") {
		return nil, &channel.FieldError{Field: "app_token", Msg: "must be an app-level token (xapp-...)"}
	}
	if app == "" && signing == "" {
		return nil, &channel.FieldError{Field: "app_token", Msg: "set app_token for Socket Mode, or signing_secret for the Events API webhook"}
	}
	apiURL, err := cfg.BaseURL("api_url", "")
	if err != nil {
		return nil, err
	}
	apiURL += "/" // goslack wants its API URL to end in a slash
	opts := []goslack.Option{goslack.OptionAPIURL(apiURL), goslack.OptionHTTPClient(cfg.HTTPClient(30 * time.Second))}
	if app != "" {
		opts = append(opts, goslack.OptionAppLevelToken(app))
	}
	return &Adapter{api: goslack.New(bot, opts...), appToken: app, signingSecret: signing, dial: cfg.DialContext()}, nil
}

// Capabilities: Slack truncates text past 40,000 characters and advises
// 4,000; chat.postMessage allows about one message per second per channel
// (short bursts tolerated), and 429s carry Retry-After.
func (a *Adapter) Capabilities() channel.Capabilities {
	return channel.Capabilities{MaxMessageLength: 4000, Threads: true, Edits: true, Buttons: true, Markdown: "mrkdwn",
		Pace: channel.Pace{PerSecond: 20, Burst: 20, ChatInterval: time.Second, ChatBurst: 3}}
}

// classify maps Web API errors onto the runtime's classes.
func classify(err error) error {
	var rl *goslack.RateLimitedError
	if errors.As(err, &rl) {
		return channel.RetryAfter(err, rl.RetryAfter)
	}
	var se goslack.SlackErrorResponse
	if errors.As(err, &se) {
		switch se.Err {
		case "invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired", "no_permission", "missing_scope", "not_allowed_token_type":
			return channel.Permanent(fmt.Errorf("Slack: %s", se.Err))
		case "channel_not_found", "not_in_channel", "is_archived", "msg_too_long", "no_text", "restricted_action", "cannot_dm_bot":
			return channel.Rejected(fmt.Errorf("Slack: %s", se.Err))
		}
		return fmt.Errorf("Slack: %s", se.Err)
	}
	var he goslack.StatusCodeError
	if errors.As(err, &he) {
		return channel.HTTPStatusError(he.Code, he.Status, 0)
	}
	return err
}

// Probe is auth.test with the bot token.
func (a *Adapter) Probe(ctx context.Context) (channel.Identity, error) {
	r, err := a.api.AuthTestContext(ctx)
	if err != nil {
		return channel.Identity{}, classify(err)
	}
	a.mu.Lock()
	a.self = r.UserID
	a.mu.Unlock()
	return channel.Identity{ID: r.UserID, Name: r.User, DisplayName: r.Team}, nil
}

func (a *Adapter) selfID() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.self
}

// Run checks the bot token, then runs Socket Mode (or, in Events API mode,
// waits: events arrive through Webhook).
func (a *Adapter) Run(ctx context.Context, h channel.Host) error {
	me, err := a.Probe(ctx)
	if err != nil {
		return err
	}
	if a.appToken == "" {
		h.Connected(me)
		<-ctx.Done()
		return nil
	}
	// The Socket Mode URL comes from apps.connections.open: it is dialled
	// through the network policy like api_url.
	smc := socketmode.New(a.api, socketmode.OptionDialer(&websocket.Dialer{HandshakeTimeout: 20 * time.Second, NetDialContext: a.dial}))
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- smc.RunContext(runCtx) }()
	announced := false
	for {
		select {
		case <-ctx.Done():
			<-done
			return nil
		case err := <-done:
			if ctx.Err() != nil {
				return nil
			}
			if err == nil {
				err = errors.New("Socket Mode stopped")
			}
			return classify(err)
		case evt, ok := <-smc.Events:
			if !ok {
				return errors.New("Socket Mode closed its event stream")
			}
			switch evt.Type {
			case socketmode.EventTypeConnected:
				if !announced {
					h.Connected(me)
					announced = true
				}
				h.Alive()
			case socketmode.EventTypeInvalidAuth:
				return channel.Permanent(errors.New("Slack: invalid_auth (app-level token)"))
			case socketmode.EventTypeConnectionError, socketmode.EventTypeIncomingError:
				// socketmode would redial on its own schedule; hand the
				// failure to the runtime, whose backoff and status apply
				// to every adapter alike.
				cancel()
				<-done
				if ctx.Err() != nil {
					return nil
				}
				return classify(connError(evt.Data))
			case socketmode.EventTypeEventsAPI:
				ev, ok := evt.Data.(slackevents.EventsAPIEvent)
				if evt.Request != nil {
					smc.Ack(*evt.Request)
				}
				if !ok {
					continue
				}
				if in, ok := a.inbound(ev); ok {
					if err := h.Deliver(ctx, in); err != nil {
						if ctx.Err() != nil {
							return nil
						}
						return err
					}
				} else {
					h.Alive()
				}
			default:
				h.Alive()
			}
		}
	}
}

// connError is the error a socketmode error event carries.
func connError(data any) error {
	switch e := data.(type) {
	case *goslack.ConnectionErrorEvent:
		if e.ErrorObj != nil {
			return e.ErrorObj
		}
	case error:
		return e
	}
	return fmt.Errorf("Socket Mode connection failed: %v", data)
}

// inbound turns an event into a message: DMs (message.im) and mentions
// (app_mention); never bots or ourselves, never edits.
func (a *Adapter) inbound(ev slackevents.EventsAPIEvent) (channel.Inbound, bool) {
	if ev.Type != slackevents.CallbackEvent {
		return channel.Inbound{}, false
	}
	self := a.selfID()
	switch e := ev.InnerEvent.Data.(type) {
	case *slackevents.MessageEvent:
		if e.ChannelType != "im" || e.SubType != "" || e.BotID != "" || e.User == "" || e.User == self {
			return channel.Inbound{}, false
		}
		return channel.Inbound{ChatID: e.Channel, Space: ev.TeamID, UserID: e.User, UserName: e.User, Text: e.Text,
			MessageID: e.TimeStamp, ThreadID: e.ThreadTimeStamp, Direct: true}, true
	case *slackevents.AppMentionEvent:
		if e.BotID != "" || e.User == "" || e.User == self {
			return channel.Inbound{}, false
		}
		text := strings.TrimSpace(strings.ReplaceAll(e.Text, "<@"+self+">", ""))
		thread := e.ThreadTimeStamp
		if thread == "" {
			thread = e.TimeStamp // answer in a thread under the mention
		}
		return channel.Inbound{ChatID: e.Channel, Space: ev.TeamID, UserID: e.User, UserName: e.User, Text: text,
			MessageID: e.TimeStamp, ThreadID: thread}, true
	}
	return channel.Inbound{}, false
}

// Send is chat.postMessage, in the thread when there is one.
func (a *Adapter) Send(ctx context.Context, m channel.Outbound) (string, error) {
	opts := []goslack.MsgOption{goslack.MsgOptionText(m.Text, false)}
	if m.ThreadID != "" {
		opts = append(opts, goslack.MsgOptionTS(m.ThreadID))
	}
	_, ts, err := a.api.PostMessageContext(ctx, m.ChatID, opts...)
	if err != nil {
		return "", classify(err)
	}
	return ts, nil
}

// Webhook takes Events API callbacks after checking X-Slack-Signature
// (and its timestamp) with the signing secret; it answers url_verification.
func (a *Adapter) Webhook(_ context.Context, r *channel.WebhookRequest) (*channel.WebhookResponse, []channel.Inbound, error) {
	if a.signingSecret == "" {
		return nil, nil, fmt.Errorf("%w: this channel has no signing_secret", channel.ErrBadSignature)
	}
	sv, err := goslack.NewSecretsVerifier(r.Header, a.signingSecret)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", channel.ErrBadSignature, err)
	}
	sv.Write(r.Body)
	if err := sv.Ensure(); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", channel.ErrBadSignature, err)
	}
	ev, err := slackevents.ParseEvent(json.RawMessage(r.Body), slackevents.OptionNoVerifyToken())
	if err != nil {
		return nil, nil, fmt.Errorf("not a Slack event: %w", err)
	}
	if ev.Type == slackevents.URLVerification {
		var c slackevents.ChallengeResponse
		if err := json.Unmarshal(r.Body, &c); err != nil {
			return nil, nil, err
		}
		return &channel.WebhookResponse{Status: 200, ContentType: "text/plain", Body: []byte(c.Challenge)}, nil, nil
	}
	if in, ok := a.inbound(ev); ok {
		return nil, []channel.Inbound{in}, nil
	}
	return nil, nil, nil
}
