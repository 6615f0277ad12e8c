package pairing

import (
	"encoding/json"
	"net/url"
	"strings"

	"github.com/fangd/fangd/actors/kernel"
)

// Push target types. Each becomes one push endpoint of the webhook engine
// (durable outbox, retries, dead letters, the SSRF guard on every dial);
// only the URL, the headers and the body differ.
const (
	TargetNtfy    = "ntfy"    // POST <server>/ with ntfy's JSON publish body
	TargetGotify  = "gotify"  // POST <server>/message, X-Gotify-Key
	TargetWebhook = "webhook" // POST <url>, Standard Webhooks signature
	TargetWebPush = "webpush" // RFC 8030 + RFC 8291 encryption + VAPID (webpush.go)
)

// Target is how a device is reached. Token and Secret are write-only:
// they go to the webhook engine's vault and are never stored here or shown.
type Target struct {
	Type   string `json:"type"`
	Server string `json:"server,omitempty"` // ntfy, gotify
	Topic  string `json:"topic,omitempty"`  // ntfy
	URL    string `json:"url,omitempty"`    // webhook
	Token  string `json:"-"`                // ntfy access token, gotify app token
	Secret string `json:"-"`                // webhook signing secret
	// A Web Push subscription's keys (url is its endpoint).
	P256DH     string `json:"-"`
	AuthSecret string `json:"-"`
}

// Validate checks a target's shape (the webhook engine checks the URL
// against the SSRF guard when the endpoint is made).
func (t *Target) Validate() error {
	switch t.Type {
	case TargetNtfy:
		if err := httpURL("push.server", t.Server); err != nil {
			return err
		}
		if !validTopic(t.Topic) {
			return kernel.Invalid("push.topic must be 1-64 letters, digits, '-' or '_'")
		}
	case TargetGotify:
		if err := httpURL("push.server", t.Server); err != nil {
			return err
		}
		if t.Token == "" {
			return kernel.Invalid("push.token (the gotify application token) is required")
		}
	case TargetWebhook:
		if err := httpURL("push.url", t.URL); err != nil {
			return err
		}
	case TargetWebPush:
		return t.validateWebPush()
	case "":
		return kernel.Invalid("push.type is required (ntfy, gotify, webhook or webpush)")
	default:
		return kernel.Invalid("push.type %q is unknown (ntfy, gotify, webhook or webpush)", t.Type)
	}
	return nil
}

func httpURL(field, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return kernel.Invalid("%s must be an http(s) URL without credentials", field)
	}
	return nil
}

func validTopic(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// endpoint is what the webhook engine needs to reach t.
func (t *Target) endpoint() (u, secret string, headers map[string]string) {
	headers = map[string]string{}
	switch t.Type {
	case TargetNtfy:
		// ntfy's JSON publishing: POST the JSON message to the root URL,
		// the topic inside it (docs.ntfy.sh/publish/#publish-as-json).
		u = strings.TrimRight(t.Server, "/") + "/"
		if t.Token != "" {
			headers["Authorization"] = "Bearer " + t.Token
		}
	case TargetGotify:
		u = strings.TrimRight(t.Server, "/") + "/message"
		headers["X-Gotify-Key"] = t.Token
	case TargetWebhook:
		u, secret = t.URL, t.Secret
	case TargetWebPush:
		u = t.URL // each message brings its own headers (webPushMessage)
	}
	return u, secret, headers
}

// Notification is what POST /api/pairing/notify sends, and what an
// approval request becomes.
type Notification struct {
	Title    string   `json:"title"`
	Message  string   `json:"message"`
	Priority int      `json:"priority,omitempty"` // 1 (min) .. 5 (max), ntfy's scale
	Actions  []Action `json:"actions,omitempty"`
	// ApprovalID is set on approval notifications.
	ApprovalID string `json:"approval_id,omitempty"`
}

// Action is a button on a notification: an HTTP request the device makes
// when pressed (ntfy's "http" action).
type Action struct {
	Label  string `json:"label"`
	URL    string `json:"url"`
	Method string `json:"method"`
	Body   string `json:"body,omitempty"`
}

// body renders n for t's type.
func (t *Target) body(n *Notification) []byte {
	prio := n.Priority
	if prio == 0 {
		prio = 3
	}
	var v any
	switch t.Type {
	case TargetNtfy:
		acts := make([]map[string]any, 0, len(n.Actions))
		for _, a := range n.Actions {
			acts = append(acts, map[string]any{"action": "http", "label": a.Label, "url": a.URL, "method": a.Method,
				"headers": map[string]string{"Content-Type": "application/json"}, "body": a.Body, "clear": true})
		}
		m := map[string]any{"topic": t.Topic, "title": n.Title, "message": n.Message, "priority": prio}
		if len(acts) > 0 {
			m["actions"] = acts
		}
		v = m
	case TargetGotify:
		// Gotify has no action buttons; the actions travel in extras for a
		// client that knows them. Priority on gotify's 0..10 scale.
		m := map[string]any{"title": n.Title, "message": n.Message, "priority": prio * 2}
		if len(n.Actions) > 0 {
			m["extras"] = map[string]any{"fangd::actions": n.Actions}
		}
		v = m
	default:
		v = map[string]any{"type": "pairing.notification", "title": n.Title, "message": n.Message,
			"priority": prio, "actions": n.Actions, "approval_id": n.ApprovalID}
	}
	b, _ := json.Marshal(v)
	return b
}
