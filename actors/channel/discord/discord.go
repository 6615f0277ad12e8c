// Package discord is the Discord adapter on github.com/bwmarrin/discordgo:
// the gateway websocket for inbound messages, the REST API for replies.
// discordgo's endpoints are package globals pointing at discord.com, so
// REST calls go through a transport that rewrites them to api_url (a proxy,
// a self-hosted compatible server, or a test fake); the gateway URL comes
// from GET /gateway like on Discord.
package discord

//lint:file-ignore ST1005 errors here become the channel's status message and begin with a proper noun (the platform's name, Socket Mode), spelt as the operator knows it.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/gorilla/websocket"

	"github.com/fangd/fangd/actors/channel"
)

// MaxMessageLength is Discord's content limit.
const MaxMessageLength = 2000

// Adapter is one bot.
type Adapter struct {
	token          string
	api            *url.URL
	intents        int
	requireMention bool
	client         *http.Client
	dial           func(ctx context.Context, network, addr string) (net.Conn, error) // the network policy's, if any

	mu   sync.Mutex
	sess *discordgo.Session // the live gateway session
}

// New builds the adapter (no I/O).
func New(cfg *channel.Config) (channel.Adapter, error) {
	api, err := channel.HTTPURL(strings.TrimRight(cfg.Text("api_url"), "/"))
	if err != nil {
		return nil, &channel.FieldError{Field: "api_url", Msg: "must be an http(s) URL"}
	}
	token := strings.TrimPrefix(cfg.Secret("bot_token"), "Bot ")
	if strings.ContainsAny(token, " \t") {
		return nil, &channel.FieldError{Field: "bot_token", Msg: "is not a bot token"}
	}
	a := &Adapter{token: token, api: api, intents: cfg.Int("intents"), requireMention: cfg.Bool("require_mention")}
	base := http.DefaultTransport
	if cfg.Net != nil {
		base = cfg.HTTPClient(0).Transport
		a.dial = cfg.DialContext()
	}
	a.client = &http.Client{Timeout: 30 * time.Second, Transport: &rewrite{to: api, base: base}}
	return a, nil
}

// rewrite sends requests for discordgo's built-in API base to api_url.
type rewrite struct {
	to   *url.URL
	base http.RoundTripper
}

var discordAPI, _ = url.Parse(discordgo.EndpointAPI)

func (r *rewrite) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host == discordAPI.Host && strings.HasPrefix(req.URL.Path, discordAPI.Path) {
		u := *req.URL
		u.Scheme, u.Host = r.to.Scheme, r.to.Host
		u.Path = r.to.Path + "/" + strings.TrimPrefix(req.URL.Path, discordAPI.Path)
		u.RawPath = ""
		req = req.Clone(req.Context())
		req.URL, req.Host = &u, u.Host
	}
	return r.base.RoundTrip(req)
}

// Capabilities: 2000 characters; Discord allows 5 messages per 5 seconds
// per channel and 50 requests per second per bot, and answers 429 with a
// retry_after beyond that.
func (a *Adapter) Capabilities() channel.Capabilities {
	return channel.Capabilities{MaxMessageLength: MaxMessageLength, Threads: true, Edits: true, Buttons: true, Markdown: "discord",
		Pace: channel.Pace{PerSecond: 50, Burst: 50, ChatInterval: time.Second, ChatBurst: 5}}
}

func (a *Adapter) session() (*discordgo.Session, error) {
	s, err := discordgo.New("Bot " + a.token)
	if err != nil {
		return nil, err
	}
	s.Client = a.client
	s.Dialer = &websocket.Dialer{HandshakeTimeout: 20 * time.Second, Proxy: http.ProxyFromEnvironment}
	if a.dial != nil {
		// The gateway URL comes from GET /gateway: dialled through the
		// network policy like api_url.
		s.Dialer.Proxy, s.Dialer.NetDialContext = nil, a.dial
	}
	// Reconnects and retries belong to the runtime.
	s.ShouldReconnectOnError = false
	s.ShouldRetryOnRateLimit = false
	s.MaxRestRetries = 0
	s.StateEnabled = true
	s.LogLevel = -1 // errors come back to us; discordgo's own log goes to stderr
	s.Identify.Intents = discordgo.Intent(a.intents)
	return s, nil
}

// classify maps discordgo errors to the runtime's classes.
func classify(err error) error {
	// With ShouldRetryOnRateLimit off, a 429 comes back as this, not as
	// a RESTError; its retry_after is the wait Discord asks for.
	var rl *discordgo.RateLimitError
	if errors.As(err, &rl) && rl.RateLimit != nil && rl.TooManyRequests != nil {
		return channel.HTTPStatusError(http.StatusTooManyRequests, rl.Message, max(rl.RetryAfter, time.Second))
	}
	var re *discordgo.RESTError
	if errors.As(err, &re) && re.Response != nil {
		desc := http.StatusText(re.Response.StatusCode)
		if re.Message != nil && re.Message.Message != "" {
			desc = re.Message.Message
		}
		var wait time.Duration
		if re.Response.StatusCode == http.StatusTooManyRequests {
			wait = time.Second
		}
		if re.Response.StatusCode == http.StatusForbidden || re.Response.StatusCode == http.StatusNotFound {
			// Missing access to one channel, or an unknown channel: this
			// message cannot go, the bot is fine.
			return channel.Rejected(&channel.StatusError{Status: re.Response.StatusCode, Description: desc})
		}
		return channel.HTTPStatusError(re.Response.StatusCode, desc, wait)
	}
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		switch ce.Code {
		case 4004: // authentication failed
			return channel.Permanent(fmt.Errorf("Discord gateway: authentication failed (%d)", ce.Code))
		case 4013, 4014: // invalid or disallowed intents
			return channel.Permanent(fmt.Errorf("Discord gateway: intents not allowed for this bot (%d %s); enable them in the developer portal or change intents", ce.Code, ce.Text))
		case 4010, 4011, 4012: // invalid shard / sharding required / invalid API version
			return channel.Permanent(fmt.Errorf("Discord gateway refused the connection (%d %s)", ce.Code, ce.Text))
		}
	}
	return err
}

// Probe is GET /users/@me.
func (a *Adapter) Probe(ctx context.Context) (channel.Identity, error) {
	s, err := a.session()
	if err != nil {
		return channel.Identity{}, err
	}
	u, err := s.User("@me", discordgo.WithContext(ctx))
	if err != nil {
		return channel.Identity{}, classify(err)
	}
	return channel.Identity{ID: u.ID, Name: u.Username, DisplayName: u.GlobalName}, nil
}

// Run opens the gateway and delivers messages until it closes.
func (a *Adapter) Run(ctx context.Context, h channel.Host) error {
	me, err := a.Probe(ctx)
	if err != nil {
		return err
	}
	s, err := a.session()
	if err != nil {
		return err
	}
	closed := make(chan struct{})
	var once sync.Once
	s.AddHandler(func(*discordgo.Session, *discordgo.Disconnect) { once.Do(func() { close(closed) }) })
	msgs := make(chan channel.Inbound, 64)
	s.AddHandler(func(_ *discordgo.Session, m *discordgo.MessageCreate) {
		if in, ok := a.inbound(m, me.ID); ok {
			select {
			case msgs <- in:
			case <-ctx.Done():
			}
		} else {
			h.Alive()
		}
	})
	s.AddHandler(func(*discordgo.Session, *discordgo.Event) { h.Alive() })
	if err := s.Open(); err != nil {
		return classify(err)
	}
	a.mu.Lock()
	a.sess = s
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.sess = nil
		a.mu.Unlock()
		s.Close()
	}()
	h.Connected(me)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-closed:
			return errors.New("the Discord gateway closed the connection")
		case in := <-msgs:
			if err := h.Deliver(ctx, in); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
		}
	}
}

// inbound turns a MESSAGE_CREATE into a message: DMs always, guild
// messages when the bot is mentioned (unless require_mention is off).
func (a *Adapter) inbound(m *discordgo.MessageCreate, selfID string) (channel.Inbound, bool) {
	if m.Author == nil || m.Author.Bot || m.Author.ID == selfID || strings.TrimSpace(m.Content) == "" {
		return channel.Inbound{}, false
	}
	text := m.Content
	if m.GuildID != "" && a.requireMention {
		mentioned := false
		for _, u := range m.Mentions {
			if u.ID == selfID {
				mentioned = true
			}
		}
		if !mentioned {
			return channel.Inbound{}, false
		}
		text = strings.TrimSpace(strings.NewReplacer("<@"+selfID+">", "", "<@!"+selfID+">", "").Replace(text))
	}
	return channel.Inbound{ChatID: m.ChannelID, Space: m.GuildID, UserID: m.Author.ID, UserName: m.Author.Username,
		Text: text, MessageID: m.ID, Direct: m.GuildID == "", At: m.Timestamp}, true
}

// Send posts to a channel, as a reply when answering a message.
func (a *Adapter) Send(ctx context.Context, m channel.Outbound) (string, error) {
	s, err := a.session()
	if err != nil {
		return "", err
	}
	send := &discordgo.MessageSend{Content: m.Text, AllowedMentions: &discordgo.MessageAllowedMentions{}}
	if m.ReplyTo != "" {
		no := false
		send.Reference = &discordgo.MessageReference{MessageID: m.ReplyTo, ChannelID: m.ChatID, FailIfNotExists: &no}
	}
	msg, err := s.ChannelMessageSendComplex(m.ChatID, send, discordgo.WithContext(ctx))
	if err != nil {
		return "", classify(err)
	}
	return msg.ID, nil
}
