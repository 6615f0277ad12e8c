// Package whatsapp is the WhatsApp channel adapter. Its main mode is the
// WhatsApp Business Cloud API: Meta delivers user messages as webhooks
// (verified with the subscribe handshake and X-Hub-Signature-256) and
// replies go out through the Graph API's /<phone_number_id>/messages.
//
// A second, send-only mode drives a WhatsApp Web gateway (LibreFang's
// Baileys gateway protocol): replies go through POST <gateway>/message/send.
// Such a gateway forwards inbound messages to the agent API by itself; it
// does not call this channel. The gateway's QR login is in qr.go.
package whatsapp

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/transport/httpretry"
)

// MaxTextRunes is the Cloud API's limit on a text message body.
const MaxTextRunes = 4096

// Adapter is one WhatsApp business number (or one linked gateway).
type Adapter struct {
	api         string // Graph API base including the version, no trailing slash
	token       string
	phoneID     string
	appSecret   []byte
	verifyToken string
	gateway     string // set: send through the WhatsApp Web gateway
	http        *http.Client
}

// New builds an adapter from a validated configuration; it does no I/O.
func New(cfg *channel.Config) (channel.Adapter, error) {
	a := &Adapter{token: cfg.Secret("access_token"), phoneID: cfg.Text("phone_number_id"),
		appSecret: []byte(cfg.Secret("app_secret")), verifyToken: cfg.Secret("verify_token"),
		http: cfg.HTTPClient(30 * time.Second)}
	if a.token == "" {
		gw := cfg.Text("gateway_url")
		if gw == "" {
			return nil, &channel.FieldError{Field: "access_token", Msg: "is required (Cloud API), or set gateway_url for a WhatsApp Web gateway"}
		}
		if _, err := channel.HTTPURL(gw); err != nil {
			return nil, &channel.FieldError{Field: "gateway_url", Msg: err.Error()}
		}
		a.gateway = strings.TrimRight(gw, "/")
		return a, nil
	}
	a.api = strings.TrimRight(cfg.Text("api_url"), "/")
	if _, err := channel.HTTPURL(a.api); err != nil {
		return nil, &channel.FieldError{Field: "api_url", Msg: err.Error()}
	}
	if a.phoneID == "" {
		return nil, &channel.FieldError{Field: "phone_number_id", Msg: "is required with access_token"}
	}
	if strings.ContainsAny(a.phoneID, "/?#") {
		return nil, &channel.FieldError{Field: "phone_number_id", Msg: "must be the numeric id from the WhatsApp Manager"}
	}
	// Without the app secret nothing can tell Meta's deliveries from forged
	// ones, so inbound would have to be refused: make that a config error.
	if len(a.appSecret) == 0 {
		return nil, &channel.FieldError{Field: "app_secret", Msg: "is required to verify X-Hub-Signature-256 on webhook deliveries"}
	}
	return a, nil
}

// Capabilities of WhatsApp: 4096-character texts, replies quote the
// message they answer (context), WhatsApp's own light formatting.
func (a *Adapter) Capabilities() channel.Capabilities {
	return channel.Capabilities{
		MaxMessageLength: MaxTextRunes,
		Markdown:         "none",
		// Cloud API throughput is 80 messages/s per number by default; one
		// user may receive about one message every 6 s sustained (error
		// 131056 beyond that), with small bursts.
		Pace: channel.Pace{PerSecond: 80, Burst: 80, ChatInterval: 6 * time.Second, ChatBurst: 5},
	}
}

// Probe asks the Graph API for the phone number's display name (or the
// gateway for its link state).
func (a *Adapter) Probe(ctx context.Context) (channel.Identity, error) {
	if a.gateway != "" {
		h, err := gatewayHealth(ctx, a.http, a.gateway)
		if err != nil {
			return channel.Identity{}, err
		}
		if !h.Connected {
			// Not permanent: once someone scans the QR code the link comes
			// up and the next attempt succeeds.
			return channel.Identity{}, errors.New("whatsapp: the WhatsApp Web gateway is not linked yet; scan its QR code (POST /api/channels/whatsapp/qr/start)")
		}
		return channel.Identity{ID: h.SessionID, Name: "whatsapp-web", DisplayName: "WhatsApp Web gateway"}, nil
	}
	var pn struct {
		ID                 string `json:"id"`
		DisplayPhoneNumber string `json:"display_phone_number"`
		VerifiedName       string `json:"verified_name"`
	}
	path := "/" + url.PathEscape(a.phoneID) + "?fields=display_phone_number,verified_name"
	if err := a.graph(ctx, http.MethodGet, path, nil, &pn); err != nil {
		return channel.Identity{}, err
	}
	return channel.Identity{ID: pn.ID, Name: pn.DisplayPhoneNumber, DisplayName: pn.VerifiedName}, nil
}

// Run has no connection of its own in Cloud API mode (messages arrive as
// webhooks): it checks the credentials, reports connected and waits.
func (a *Adapter) Run(ctx context.Context, host channel.Host) error {
	return channel.RunPushed(ctx, host, a.Probe)
}

// Send delivers one text message; a reply quotes the message it answers.
func (a *Adapter) Send(ctx context.Context, msg channel.Outbound) (string, error) {
	to := strings.TrimPrefix(strings.TrimSpace(msg.ChatID), "+")
	if to == "" {
		return "", channel.Rejected(errors.New("whatsapp: empty recipient"))
	}
	if a.gateway != "" {
		return "", gatewaySend(ctx, a.http, a.gateway, to, msg.Text)
	}
	body := map[string]any{"messaging_product": "whatsapp", "recipient_type": "individual", "to": to,
		"type": "text", "text": map[string]any{"body": msg.Text, "preview_url": false}}
	if msg.ReplyTo != "" {
		body["context"] = map[string]string{"message_id": msg.ReplyTo}
	}
	var out struct {
		Messages []struct {
			ID string `json:"id"`
		} `json:"messages"`
	}
	if err := a.graph(ctx, http.MethodPost, "/"+url.PathEscape(a.phoneID)+"/messages", body, &out); err != nil {
		return "", err
	}
	if len(out.Messages) == 0 {
		return "", nil
	}
	return out.Messages[0].ID, nil
}

// graph does one Graph API call with the access token as a bearer.
func (a *Adapter) graph(ctx context.Context, method, path string, in, out any) error {
	return channel.CallJSON(ctx, a.http, channel.Call{Method: method, URL: a.api + path, In: in, Out: out, Limit: 1 << 20,
		Header: http.Header{"Authorization": {"Bearer " + a.token}}, What: "whatsapp: graph API", Refused: classify})
}

// graphError is the Graph API's error object.
type graphError struct {
	Message   string `json:"message"`
	Type      string `json:"type"`
	Code      int    `json:"code"`
	Subcode   int    `json:"error_subcode"`
	ErrorData struct {
		Details string `json:"details"`
	} `json:"error_data"`
}

// classify maps Graph errors by their code first (Meta answers most of
// them with HTTP 400), then by status:
//   - 190 (token invalid/expired), 10 and 200-299 (permission), 3
//     (capability), 100/33 (no such phone number id): the configuration is
//     wrong — permanent;
//   - 4, 17, 32, 613, 80007, 130429 (rate limits), 131056 (pair rate
//     limit): transient, retry later;
//   - 131026 (undeliverable), 131047 (24-hour window closed), 131051
//     (unsupported type), 131008/131009/100 (parameters): this message will
//     never go — rejected;
//   - anything else (1, 2, 131000, 131016, 5xx): transient.
func classify(resp *http.Response, data []byte) error {
	var body struct {
		Error graphError `json:"error"`
	}
	_ = json.Unmarshal(data, &body)
	ge := body.Error
	desc := ge.Message
	if desc == "" {
		desc = strings.TrimSpace(string(data))
	}
	if ge.ErrorData.Details != "" {
		desc += ": " + ge.ErrorData.Details
	}
	err := &channel.StatusError{Status: resp.StatusCode, Description: fmt.Sprintf("whatsapp: %s (code %d, HTTP %d)", channel.Clip(desc, 300), ge.Code, resp.StatusCode)}
	wait := httpretry.After(resp.Header, time.Now())
	switch c := ge.Code; {
	case c == 190 || c == 10 || c == 3 || (c >= 200 && c <= 299) || (c == 100 && ge.Subcode == 33):
		return channel.Permanent(err)
	case c == 4 || c == 17 || c == 32 || c == 613 || c == 80007 || c == 130429 || c == 131056:
		return channel.RetryAfter(err, wait)
	case c == 131026 || c == 131047 || c == 131051 || c == 131008 || c == 131009 || c == 100:
		return channel.Rejected(err)
	case c != 0:
		return err
	}
	return channel.HTTPStatusError(resp.StatusCode, err.Description, wait)
}

// Webhook answers Meta's subscription handshake (GET) and turns signed
// notifications (POST) into inbound messages.
func (a *Adapter) Webhook(ctx context.Context, req *channel.WebhookRequest) (*channel.WebhookResponse, []channel.Inbound, error) {
	if a.gateway != "" {
		return &channel.WebhookResponse{Status: http.StatusNotFound, ContentType: "application/json",
			Body: []byte(`{"error":"this WhatsApp channel runs through a WhatsApp Web gateway; it takes no Cloud API webhooks"}`)}, nil, nil
	}
	switch req.Method {
	case http.MethodGet:
		return a.verify(req), nil, nil
	case http.MethodPost:
	default:
		return &channel.WebhookResponse{Status: http.StatusMethodNotAllowed}, nil, nil
	}
	if !validSignature(a.appSecret, req.Body, req.Header.Get("X-Hub-Signature-256")) {
		return nil, nil, fmt.Errorf("whatsapp: X-Hub-Signature-256 missing or wrong: %w", channel.ErrBadSignature)
	}
	msgs, err := a.parse(req.Body)
	if err != nil {
		return nil, nil, err
	}
	return nil, msgs, nil
}

// verify is the GET handshake Meta sends when the webhook is registered:
// echo hub.challenge when hub.verify_token matches.
func (a *Adapter) verify(req *channel.WebhookRequest) *channel.WebhookResponse {
	q := req.Query
	if a.verifyToken != "" && q.Get("hub.mode") == "subscribe" &&
		subtle.ConstantTimeCompare([]byte(q.Get("hub.verify_token")), []byte(a.verifyToken)) == 1 {
		return &channel.WebhookResponse{Status: http.StatusOK, ContentType: "text/plain; charset=utf-8", Body: []byte(q.Get("hub.challenge"))}
	}
	return &channel.WebhookResponse{Status: http.StatusForbidden, ContentType: "application/json",
		Body: []byte(`{"error":"verify token mismatch"}`)}
}

func validSignature(secret, body []byte, header string) bool {
	got, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		return false
	}
	sig, err := hex.DecodeString(got)
	if err != nil {
		return false
	}
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return hmac.Equal(m.Sum(nil), sig)
}

// notification is the webhook body of the whatsapp_business_account object.
type notification struct {
	Object string `json:"object"`
	Entry  []struct {
		Changes []struct {
			Field string `json:"field"`
			Value struct {
				Metadata struct {
					PhoneNumberID string `json:"phone_number_id"`
				} `json:"metadata"`
				Contacts []struct {
					WaID    string `json:"wa_id"`
					Profile struct {
						Name string `json:"name"`
					} `json:"profile"`
				} `json:"contacts"`
				Messages []struct {
					From      string `json:"from"`
					ID        string `json:"id"`
					Timestamp string `json:"timestamp"`
					Type      string `json:"type"`
					Text      struct {
						Body string `json:"body"`
					} `json:"text"`
					Button struct {
						Text string `json:"text"`
					} `json:"button"`
					Interactive struct {
						ButtonReply struct {
							Title string `json:"title"`
						} `json:"button_reply"`
						ListReply struct {
							Title string `json:"title"`
						} `json:"list_reply"`
					} `json:"interactive"`
				} `json:"messages"`
			} `json:"value"`
		} `json:"changes"`
	} `json:"entry"`
}

// parse extracts text messages for this phone number; status updates,
// media and other numbers' traffic are acknowledged and ignored.
func (a *Adapter) parse(body []byte) ([]channel.Inbound, error) {
	var n notification
	if err := json.Unmarshal(body, &n); err != nil {
		return nil, fmt.Errorf("whatsapp: webhook body is not JSON: %w", err)
	}
	var out []channel.Inbound
	for _, e := range n.Entry {
		for _, ch := range e.Changes {
			v := ch.Value
			if ch.Field != "messages" || (v.Metadata.PhoneNumberID != "" && v.Metadata.PhoneNumberID != a.phoneID) {
				continue
			}
			names := map[string]string{}
			for _, c := range v.Contacts {
				names[c.WaID] = c.Profile.Name
			}
			for _, m := range v.Messages {
				text := ""
				switch m.Type {
				case "text":
					text = m.Text.Body
				case "button":
					text = m.Button.Text
				case "interactive":
					text = m.Interactive.ButtonReply.Title + m.Interactive.ListReply.Title
				}
				if strings.TrimSpace(text) == "" || m.From == "" {
					continue
				}
				at := time.Now()
				if s, err := strconv.ParseInt(m.Timestamp, 10, 64); err == nil {
					at = time.Unix(s, 0)
				}
				name := names[m.From]
				if name == "" {
					name = m.From
				}
				out = append(out, channel.Inbound{ChatID: m.From, UserID: m.From, UserName: name, Text: text,
					MessageID: m.ID, Direct: true, At: at})
			}
		}
	}
	return out, nil
}
