// Package whatsapptest is an in-process stand-in for Meta's WhatsApp Cloud
// API (the Graph API endpoints a business number sends through, with Graph's
// error objects), for Meta's webhook deliveries (verification handshake and
// X-Hub-Signature-256 signed notifications), and for the WhatsApp Web
// gateway that LibreFang's QR login drives (POST /login/start,
// GET /login/status, POST /message/send).
package whatsapptest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/fangd/fangd/actors/channel/channeltest"
)

// Version is the Graph API version the fake serves (any vNN.N is accepted).
const Version = "v21.0"

// Sent is a message the business number sent.
type Sent struct {
	To        string
	Body      string
	ContextID string // message replied to
	ID        string
}

// GraphError is a Graph API error object.
type GraphError struct {
	Message      string `json:"message"`
	Type         string `json:"type"`
	Code         int    `json:"code"`
	ErrorSubcode int    `json:"error_subcode,omitempty"`
	FBTraceID    string `json:"fbtrace_id"`
}

// PhoneNumberID is the business phone number's id in every fake.
const PhoneNumberID = "106540352242922"

// Server is the Cloud API fake.
type Server struct {
	*httptest.Server
	PhoneNumberID string
	AccessToken   string
	AppSecret     string
	WABAID        string

	channeltest.Recorder[Sent]
}

// New starts a Cloud API fake for phone number id "106540352242922".
func New(accessToken, appSecret string) *Server {
	s := &Server{PhoneNumberID: PhoneNumberID, AccessToken: accessToken, AppSecret: appSecret, WABAID: "102290129340398"}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{version}/{id}", s.phoneNumber)
	mux.HandleFunc("POST /{version}/{id}/messages", s.messages)
	s.Server = httptest.NewServer(s.Gate(channeltest.Gate{
		// Requests are counted with the version segment written as {version}.
		Route: func(r *http.Request) string {
			parts := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/"), "/", 2)
			route := r.Method + " /{version}"
			if len(parts) == 2 {
				route += "/" + parts[1]
			}
			return route
		},
		Down: func(w http.ResponseWriter) {
			graphError(w, http.StatusServiceUnavailable, GraphError{Message: "Service temporarily unavailable", Type: "OAuthException", Code: 2})
		},
	}, mux))
	return s
}

// Sent lists messages sent to `to` ("" = all).
func (s *Server) Sent(to string) []Sent {
	return s.SentWhere(func(m Sent) bool { return to == "" || m.To == to })
}

func graphError(w http.ResponseWriter, status int, e GraphError) {
	e.FBTraceID = channeltest.RandomID(11)
	w.Header().Set("WWW-Authenticate", `OAuth "Facebook Platform" "`+e.Type+`" "`+e.Message+`"`)
	channeltest.WriteJSON(w, status, map[string]any{"error": e})
}

func (s *Server) authOK(w http.ResponseWriter, r *http.Request) bool {
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if tok == "" {
		tok = r.URL.Query().Get("access_token")
	}
	if tok == "" {
		graphError(w, http.StatusUnauthorized, GraphError{Message: "An active access token must be used to query information about the current user.", Type: "OAuthException", Code: 2500})
		return false
	}
	if !hmac.Equal([]byte(tok), []byte(s.AccessToken)) {
		graphError(w, http.StatusUnauthorized, GraphError{Message: "Error validating access token: Session has expired on Tuesday, 01-Aug-23 10:00:00 PDT.", Type: "OAuthException", Code: 190, ErrorSubcode: 463})
		return false
	}
	return true
}

// phoneOK is authOK for a phone number's node: an unknown id is Graph's
// "Unsupported <verb> request" error.
func (s *Server) phoneOK(w http.ResponseWriter, r *http.Request, verb string) bool {
	if !s.authOK(w, r) {
		return false
	}
	if r.PathValue("id") != s.PhoneNumberID {
		graphError(w, http.StatusBadRequest, GraphError{Message: "Unsupported " + verb + " request. Object with ID '" + r.PathValue("id") + "' does not exist, cannot be loaded due to missing permissions, or does not support this operation.", Type: "GraphMethodException", Code: 100, ErrorSubcode: 33})
		return false
	}
	return true
}

func (s *Server) phoneNumber(w http.ResponseWriter, r *http.Request) {
	if !s.phoneOK(w, r, "get") {
		return
	}
	channeltest.WriteJSON(w, http.StatusOK, map[string]string{"verified_name": "Fang Test Bot", "display_phone_number": "+1 555-010-0000",
		"id": s.PhoneNumberID, "quality_rating": "GREEN"})
}

func (s *Server) messages(w http.ResponseWriter, r *http.Request) {
	if !s.phoneOK(w, r, "post") {
		return
	}
	if limited, _ := s.TakeLimit(); limited {
		graphError(w, http.StatusTooManyRequests, GraphError{Message: "(#130429) Rate limit hit", Type: "OAuthException", Code: 130429})
		return
	}
	var in struct {
		MessagingProduct string `json:"messaging_product"`
		RecipientType    string `json:"recipient_type"`
		To               string `json:"to"`
		Type             string `json:"type"`
		Status           string `json:"status"`
		MessageID        string `json:"message_id"`
		Text             *struct {
			Body       string `json:"body"`
			PreviewURL bool   `json:"preview_url"`
		} `json:"text"`
		Context *struct {
			MessageID string `json:"message_id"`
		} `json:"context"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 128*1024)).Decode(&in); err != nil {
		graphError(w, http.StatusBadRequest, GraphError{Message: "(#100) Invalid parameter", Type: "OAuthException", Code: 100})
		return
	}
	if in.MessagingProduct != "whatsapp" {
		graphError(w, http.StatusBadRequest, GraphError{Message: "(#100) The parameter messaging_product is required.", Type: "OAuthException", Code: 100})
		return
	}
	if in.Status == "read" { // mark-as-read
		channeltest.WriteJSON(w, http.StatusOK, map[string]bool{"success": true})
		return
	}
	if in.Type != "text" || in.Text == nil || in.To == "" {
		graphError(w, http.StatusBadRequest, GraphError{Message: "(#100) Invalid parameter", Type: "OAuthException", Code: 100})
		return
	}
	if utf8.RuneCountInString(in.Text.Body) > 4096 {
		graphError(w, http.StatusBadRequest, GraphError{Message: "(#100) Param text['body'] must be at most 4096 characters long.", Type: "OAuthException", Code: 100})
		return
	}
	id := "wamid." + channeltest.RandomID(40)
	m := Sent{To: in.To, Body: in.Text.Body, ID: id}
	if in.Context != nil {
		m.ContextID = in.Context.MessageID
	}
	s.Lock()
	s.Record(m)
	s.Unlock()
	channeltest.WriteJSON(w, http.StatusOK, map[string]any{"messaging_product": "whatsapp",
		"contacts": []map[string]string{{"input": in.To, "wa_id": strings.TrimPrefix(in.To, "+")}},
		"messages": []map[string]string{{"id": id}}})
}

// Verify performs Meta's webhook verification request against endpoint with
// verifyToken and returns the status and body.
func Verify(endpoint, verifyToken, challenge string) (int, string, error) {
	q := url.Values{"hub.mode": {"subscribe"}, "hub.verify_token": {verifyToken}, "hub.challenge": {challenge}}
	resp, err := http.Get(endpoint + "?" + q.Encode())
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// Inbound describes a user's text message for Deliver.
type Inbound struct {
	From      string // wa_id, e.g. "15551234567"
	Name      string // profile name
	Text      string
	ID        string // default generated
	ContextID string
}

// NotificationBody builds the webhook body Meta sends for a text message.
func (s *Server) NotificationBody(in Inbound) []byte {
	if in.ID == "" {
		in.ID = "wamid." + channeltest.RandomID(40)
	}
	msg := map[string]any{"from": in.From, "id": in.ID, "timestamp": strconv.FormatInt(time.Now().Unix(), 10),
		"type": "text", "text": map[string]string{"body": in.Text}}
	if in.ContextID != "" {
		msg["context"] = map[string]string{"from": "15550100000", "id": in.ContextID}
	}
	b, _ := json.Marshal(map[string]any{"object": "whatsapp_business_account", "entry": []any{map[string]any{
		"id": s.WABAID, "changes": []any{map[string]any{"field": "messages", "value": map[string]any{
			"messaging_product": "whatsapp",
			"metadata":          map[string]string{"display_phone_number": "15550100000", "phone_number_id": s.PhoneNumberID},
			"contacts":          []any{map[string]any{"profile": map[string]string{"name": in.Name}, "wa_id": in.From}},
			"messages":          []any{msg},
		}}}}}})
	return b
}

// StatusBody builds a webhook body carrying only a delivery status update.
func (s *Server) StatusBody(messageID, to string) []byte {
	b, _ := json.Marshal(map[string]any{"object": "whatsapp_business_account", "entry": []any{map[string]any{
		"id": s.WABAID, "changes": []any{map[string]any{"field": "messages", "value": map[string]any{
			"messaging_product": "whatsapp",
			"metadata":          map[string]string{"display_phone_number": "15550100000", "phone_number_id": s.PhoneNumberID},
			"statuses": []any{map[string]any{"id": messageID, "status": "delivered", "timestamp": strconv.FormatInt(time.Now().Unix(), 10),
				"recipient_id": to}},
		}}}}}})
	return b
}

// Deliver POSTs a signed notification for in to endpoint and returns the
// status.
func (s *Server) Deliver(endpoint string, in Inbound) (int, error) {
	body := s.NotificationBody(in)
	return Post(endpoint, body, Signature(s.AppSecret, body))
}

// Signature is the X-Hub-Signature-256 value for body under appSecret.
func Signature(appSecret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(appSecret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Post POSTs body with the given X-Hub-Signature-256 ("" = none).
func Post(endpoint string, body []byte, signature string) (int, error) {
	return channeltest.Post(endpoint, body, channeltest.Header("User-Agent", "facebookexternalua", "X-Hub-Signature-256", signature))
}
