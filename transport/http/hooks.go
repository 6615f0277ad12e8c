package http

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/comms"
	"github.com/fangd/fangd/actors/kernel"
)

// HooksConfig enables the inbound trigger endpoints /hooks/wake and
// /hooks/agent (also under /api/hooks/...). They do not use the API key:
// callers present Token as a bearer, or sign with Secret the Standard
// Webhooks way. With neither set the routes answer 404.
type HooksConfig struct {
	Token      string
	Secret     string
	MaxPayload int
}

func (h HooksConfig) enabled() bool { return h.Token != "" || h.Secret != "" }

// SetHooks replaces the inbound trigger settings (config reload): the
// routes are always registered and answer 404 while neither credential is
// set, so enabling or disabling needs no new routes.
func (s *Server) SetHooks(h HooksConfig) { s.hooks.Store(&h) }

// Limits on inbound hook bodies (LibreFang's).
const (
	maxWakeText     = 4096
	maxHookMessage  = 16384
	hookRealmHeader = `Bearer realm="fangd-webhook"`
)

func (s *Server) hookRoutes() {
	for _, prefix := range []string{"/hooks", "/api/hooks"} {
		s.handle("POST", prefix+"/wake", s.hookWake, ownAuth)
		s.handle("POST", prefix+"/agent", s.hookAgent, ownAuth)
	}
}

// authenticateHook checks the hook token (constant time, over hashes so
// the length leaks nothing) or a Standard Webhooks signature: timestamp
// within 5 minutes and an unseen webhook-id. Refusals are audited.
func (s *Server) authenticateHook(ctx *fasthttp.RequestCtx) error {
	h := *s.hooks.Load()
	if !h.enabled() {
		return &apiError{fasthttp.StatusNotFound, "not_found", "inbound webhook triggers are not enabled ([webhook_triggers])"}
	}
	if h.MaxPayload > 0 && len(ctx.PostBody()) > h.MaxPayload {
		return &apiError{fasthttp.StatusRequestEntityTooLarge, "body_too_large", "hook body exceeds webhook_triggers.max_payload_bytes"}
	}
	if tok := bearer(ctx); tok != nil && h.Token != "" {
		got, want := sha256.Sum256(tok), sha256.Sum256([]byte(h.Token))
		if subtle.ConstantTimeCompare(got[:], want[:]) == 1 {
			ctx.SetUserValue(userActor, "webhook_token")
			return nil
		}
		return s.hookDenied(ctx, "invalid webhook token")
	}
	sig := ctx.Request.Header.Peek("webhook-signature")
	if len(sig) > 0 && h.Secret != "" {
		wh, err := hookVerifier(h.Secret)
		if err != nil {
			return err
		}
		hdr := http.Header{}
		for _, k := range []string{"webhook-id", "webhook-timestamp", "webhook-signature"} {
			hdr.Set(k, string(ctx.Request.Header.Peek(k)))
		}
		if err := wh.Verify(ctx.PostBody(), hdr); err != nil {
			why := "webhook signature does not verify"
			switch {
			case errors.Is(err, standardwebhooks.ErrMessageTooOld), errors.Is(err, standardwebhooks.ErrMessageTooNew):
				why = "webhook-timestamp is outside the 5-minute tolerance"
			case errors.Is(err, standardwebhooks.ErrRequiredHeaders), errors.Is(err, standardwebhooks.ErrInvalidHeaders):
				why = "webhook-id, webhook-timestamp and webhook-signature are all required"
			}
			return s.hookDenied(ctx, why)
		}
		c, cancel := context.WithTimeout(s.reqCtxWait(ctx), kernel.DefaultAskTimeout)
		defer cancel()
		if err := s.deps.Router.ClaimHookID(c, hdr.Get("webhook-id")); err != nil {
			if de := kernel.AsError(err); de != nil && de.Code == "webhook_replayed" {
				s.auditAuthFailure(ctx, "replayed webhook-id")
			}
			return err
		}
		ctx.SetUserValue(userActor, "webhook_signature")
		return nil
	}
	return s.hookDenied(ctx, "missing credentials")
}

func hookVerifier(secret string) (*standardwebhooks.Webhook, error) {
	if strings.HasPrefix(secret, "whsec_") {
		return standardwebhooks.NewWebhook(secret)
	}
	return standardwebhooks.NewWebhookRaw([]byte(secret))
}

func (s *Server) hookDenied(ctx *fasthttp.RequestCtx, why string) error {
	ctx.Response.Header.Set("WWW-Authenticate", hookRealmHeader)
	s.auditAuthFailure(ctx, why)
	return &apiError{fasthttp.StatusUnauthorized, "webhook_invalid_token", why + ": send Authorization: Bearer <webhook token> or a Standard Webhooks signature"}
}

type wakeBody struct {
	Text  string `json:"text"`
	Mode  string `json:"mode"`
	Agent string `json:"agent"`
}

// hookWake serves POST /hooks/wake {"text", "mode"?: "now"|"next", "agent"?}.
func (s *Server) hookWake(ctx *fasthttp.RequestCtx) error {
	if err := s.authenticateHook(ctx); err != nil {
		return err
	}
	if err := s.needComms(); err != nil {
		return err
	}
	var b wakeBody
	if err := decodeJSON(ctx, &b); err != nil {
		return err
	}
	if err := hookText("text", b.Text, maxWakeText); err != nil {
		return err
	}
	c, cancel := context.WithTimeout(s.reqCtxWait(ctx), 2*kernel.DefaultAskTimeout)
	defer cancel()
	res, err := s.deps.Router.Wake(c, comms.Wake{Text: b.Text, Mode: b.Mode, Agent: b.Agent, Via: "hook:wake"})
	return replyAudited(ctx, res, err, func() string { return "wake (" + res.Mode + ") event " + itoa(res.EventID) })
}

// hookText enforces LibreFang's text rules: not empty, bounded, no
// control characters except newline and tab.
func hookText(field, s string, max int) error {
	if strings.TrimSpace(s) == "" {
		return badRequest("invalid_input", `"`+field+`" must not be empty`)
	}
	if !utf8.ValidString(s) {
		return badRequest("invalid_input", `"`+field+`" must be valid UTF-8`)
	}
	if utf8.RuneCountInString(s) > max {
		return &apiError{fasthttp.StatusRequestEntityTooLarge, "message_too_large", `"` + field + `" is longer than ` + itoa(uint64(max)) + " characters"}
	}
	for _, r := range s {
		if r < 0x20 && r != '\n' && r != '\t' || r == 0x7f {
			return badRequest("invalid_input", `"`+field+`" must not contain control characters`)
		}
	}
	return nil
}

type hookAgentBody struct {
	Message string `json:"message"`
	Agent   string `json:"agent"`
	// Deliver sends the response on to a channel: fangd's
	// "channel:<name>:<chat_id>", or LibreFang's true with the target in
	// Channel (AgentHookPayload: deliver bool, channel).
	Deliver json.RawMessage `json:"deliver"`
	Channel *string         `json:"channel"`
	// Model is LibreFang's per-call model override: refused, fangd's
	// agents run on their own model.
	Model *string `json:"model"`
	// TimeoutSecs bounds the turn (LibreFang's, 10..600, default 120).
	TimeoutSecs *int `json:"timeout_secs"`
}

// deliverTarget reads deliver (and channel): "" when nothing is to be
// delivered, else the "channel:<name>:<chat_id>" target.
func (b *hookAgentBody) deliverTarget() (string, error) {
	var target string
	switch d := bytes.TrimSpace(b.Deliver); {
	case len(d) == 0, string(d) == "null", string(d) == "false":
		if b.Channel != nil && *b.Channel != "" {
			return "", badRequest("invalid_input", `"channel" is only used with "deliver": true`)
		}
		return "", nil
	case string(d) == "true":
		if b.Channel == nil || *b.Channel == "" {
			return "", badRequest("invalid_input", `"deliver": true needs "channel": "<name>:<chat_id>"`)
		}
		target = *b.Channel
		if !strings.HasPrefix(target, "channel:") {
			target = "channel:" + target
		}
		if strings.Count(target, ":") < 2 {
			return "", badRequest("invalid_input", `"channel" must name the chat too, "<name>:<chat_id>": fangd delivers to one chat, not to a channel's default`)
		}
	default:
		if err := json.Unmarshal(d, &target); err != nil || target == "" {
			return "", badRequest("invalid_input", `"deliver" must be true (with "channel") or "channel:<name>:<chat_id>"`)
		}
		if b.Channel != nil {
			return "", badRequest("invalid_input", `give the target either in "deliver" or in "channel", not both`)
		}
	}
	if len(target) > 200 {
		return "", badRequest("invalid_input", `the delivery target is longer than 200 characters`)
	}
	return target, nil
}

type hookUsage struct {
	InputTokens  int `json:"input_tokens"`
	OutputTokens int `json:"output_tokens"`
}

type hookAgentReply struct {
	Status      string    `json:"status"`
	AgentID     string    `json:"agent_id"`
	Response    string    `json:"response"`
	Usage       hookUsage `json:"usage"`
	MessageID   string    `json:"message_id"`
	DeliveredTo string    `json:"delivered_to,omitempty"`
}

// hookAgent serves POST /hooks/agent {"message", "agent"?, "deliver"?}:
// runs one turn of the agent (the first agent when none is named) and
// answers with its response; with deliver, the response also goes to that
// channel.
func (s *Server) hookAgent(ctx *fasthttp.RequestCtx) error {
	if err := s.authenticateHook(ctx); err != nil {
		return err
	}
	if err := s.needComms(); err != nil {
		return err
	}
	var b hookAgentBody
	if err := decodeJSON(ctx, &b); err != nil {
		return err
	}
	if err := hookText("message", b.Message, maxHookMessage); err != nil {
		return err
	}
	if b.Model != nil {
		return badRequest("unsupported_field", `"model" is not supported: the agent answers with its own model (PATCH /api/agents/{id} changes it)`)
	}
	wait := s.turnWait()
	if b.TimeoutSecs != nil {
		if *b.TimeoutSecs < 10 || *b.TimeoutSecs > 600 {
			return badRequest("invalid_input", fmt.Sprintf(`"timeout_secs" must be between 10 and 600, got %d`, *b.TimeoutSecs))
		}
		wait = min(wait, time.Duration(*b.TimeoutSecs)*time.Second)
	}
	channel, err := b.deliverTarget()
	if err != nil {
		return err
	}
	if channel != "" {
		if _, err := comms.ParseTarget(channel); err != nil {
			return err
		}
		if !strings.HasPrefix(channel, "channel:") {
			return badRequest("invalid_input", `"deliver" must be "channel:<name>:<chat_id>"`)
		}
		name := strings.SplitN(channel, ":", 3)[1]
		if !s.deps.Router.HasChannel(name) {
			return kernel.NotFound("channel %q is not configured", name)
		}
	}
	c, cancel := context.WithTimeout(s.reqCtxWait(ctx), wait)
	defer cancel()
	agent := b.Agent
	if agent == "" {
		agents := s.deps.Router.Agents()
		if agents == nil {
			return kernel.Unavailable("no agent runtime is wired into this daemon")
		}
		all, err := agents.List(c)
		if err != nil {
			return err
		}
		if len(all) == 0 {
			return kernel.NotFound("there are no agents")
		}
		agent = all[0].ID
	}
	res, err := s.deps.Router.Send(c, "hook:agent", "agent:"+agent, b.Message)
	if err != nil {
		return err
	}
	reply := hookAgentReply{Status: "completed", AgentID: res.AgentID, MessageID: res.MessageID,
		Usage: hookUsage{InputTokens: res.InputTokens, OutputTokens: res.OutputTokens}}
	if res.Response != nil {
		reply.Response = *res.Response
	}
	if channel != "" && strings.TrimSpace(reply.Response) != "" {
		if _, err := s.deps.Router.Send(c, "agent:"+res.AgentID, channel, reply.Response); err != nil {
			return err
		}
		reply.DeliveredTo = channel
	}
	s.deps.Bus.Publish("hook.agent", "hook:agent", "agent:"+res.AgentID, map[string]any{
		"message_id": res.MessageID, "delivered_to": reply.DeliveredTo})
	auditDetails(ctx, "hook ran agent "+res.AgentID+" (message "+res.MessageID+")")
	writeJSON(ctx, fasthttp.StatusOK, reply)
	return nil
}

func itoa(n uint64) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}
