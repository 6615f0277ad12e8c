// Package googlechattest is an in-process stand-in for Google's side of a
// Google Chat app: the OAuth 2.0 token endpoint that exchanges a service
// account's signed JWT for an access token, the Chat REST API
// (spaces.list, spaces.messages.create, also in incoming-webhook form), the
// public keys of chat@system.gserviceaccount.com, and the Chat service that
// POSTs signed interaction events to the app's HTTP endpoint. Paths, bodies
// and errors follow developers.google.com/workspace/chat.
package googlechattest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/fangd/fangd/actors/channel/channeltest"
)

// ChatIssuer is the issuer of the bearer tokens Chat sends to apps
// configured with a project-number audience.
const ChatIssuer = "chat@system.gserviceaccount.com"

// Paths served by the fake.
const (
	TokenPath = "/token"
	JWKSPath  = "/service_accounts/v1/jwk/chat@system.gserviceaccount.com"
)

// ChatScope is the scope a Chat app authenticates with.
const ChatScope = "https://www.googleapis.com/auth/chat.bot"

// Message is a Chat message resource (subset).
type Message struct {
	Name         string  `json:"name,omitempty"`
	Sender       *User   `json:"sender,omitempty"`
	CreateTime   string  `json:"createTime,omitempty"`
	Text         string  `json:"text,omitempty"`
	ArgumentText string  `json:"argumentText,omitempty"`
	Thread       *Thread `json:"thread,omitempty"`
	Space        *Space  `json:"space,omitempty"`
}

// User is a Chat user.
type User struct {
	Name        string `json:"name"`
	DisplayName string `json:"displayName,omitempty"`
	Type        string `json:"type,omitempty"` // HUMAN or BOT
}

// Thread is a Chat thread.
type Thread struct {
	Name      string `json:"name,omitempty"`
	ThreadKey string `json:"threadKey,omitempty"`
}

// Space is a Chat space.
type Space struct {
	Name        string `json:"name"`
	Type        string `json:"type,omitempty"`      // ROOM or DM (legacy field)
	SpaceType   string `json:"spaceType,omitempty"` // SPACE, GROUP_CHAT, DIRECT_MESSAGE
	DisplayName string `json:"displayName,omitempty"`
}

// Created is a message the app created, with how it was authorised.
type Created struct {
	Space       string
	Message     Message
	ReplyOption string
	ViaWebhook  bool
}

// Server is the fake. Create with New, Close when done.
type Server struct {
	*httptest.Server
	ProjectNumber string
	ClientEmail   string

	saKey   *rsa.PrivateKey        // the app's service account key
	chatKey channeltest.SigningKey // Google's key signing tokens sent to the app
	hookKey string

	channeltest.Recorder[Created]

	spaces map[string]Space
	tokens map[string]time.Time
}

// New starts a fake for a Chat app in project "123456789012" with one
// space, "spaces/AAAA".
func New() *Server {
	sa, _ := rsa.GenerateKey(rand.Reader, 2048)
	s := &Server{ProjectNumber: "123456789012", ClientEmail: "fangd-bot@fangd-test.iam.gserviceaccount.com",
		saKey: sa, chatKey: channeltest.NewSigningKey("chat-key-1"), hookKey: channeltest.RandomID(16),
		spaces: map[string]Space{"spaces/AAAA": {Name: "spaces/AAAA", Type: "ROOM", SpaceType: "SPACE", DisplayName: "Team room"}},
		tokens: map[string]time.Time{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+TokenPath, s.token)
	mux.HandleFunc("GET "+JWKSPath, s.jwks)
	mux.HandleFunc("GET /v1/spaces", s.listSpaces)
	mux.HandleFunc("POST /v1/spaces/{space}/messages", s.createMessage)
	s.Server = httptest.NewServer(s.Gate(channeltest.Gate{
		Route: func(r *http.Request) string {
			if strings.HasPrefix(r.URL.Path, "/v1/spaces/") && r.Method == http.MethodPost {
				return "POST /v1/spaces/{space}/messages"
			}
			return r.Method + " " + r.URL.Path
		},
		Limits: func(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, "/v1/") },
		Down: func(w http.ResponseWriter) {
			googleError(w, http.StatusServiceUnavailable, "UNAVAILABLE", "The service is currently unavailable.")
		},
		Limited: func(w http.ResponseWriter, _ int) {
			googleError(w, http.StatusTooManyRequests, "RESOURCE_EXHAUSTED",
				"Quota exceeded for quota metric 'Write requests' and limit 'Write requests per minute per space' of service 'chat.googleapis.com'.")
		},
	}, mux))
	return s
}

// JWKSURL is where the fake publishes the keys of chat@system.gserviceaccount.com.
func (s *Server) JWKSURL() string { return s.URL + JWKSPath }

// APIURL is the Chat API base (the real one is https://chat.googleapis.com/v1).
func (s *Server) APIURL() string { return s.URL + "/v1" }

// ServiceAccountJSON is the key file of the app's service account, as the
// Cloud console downloads it; token_uri points at the fake.
func (s *Server) ServiceAccountJSON() string { return s.serviceAccount(s.saKey) }

// UnknownServiceAccountJSON is a well-formed key file whose key Google does
// not know (revoked or deleted): token requests fail with invalid_grant.
func (s *Server) UnknownServiceAccountJSON() string {
	k, _ := rsa.GenerateKey(rand.Reader, 2048)
	return s.serviceAccount(k)
}

func (s *Server) serviceAccount(k *rsa.PrivateKey) string {
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	p := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	b, _ := json.Marshal(map[string]string{
		"type": "service_account", "project_id": "fangd-test", "private_key_id": "0123456789abcdef",
		"private_key": string(p), "client_email": s.ClientEmail, "client_id": "100000000000000000001",
		"auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": s.URL + TokenPath,
		"auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
		"universe_domain":             "googleapis.com",
	})
	return string(b)
}

// IncomingWebhookURL is the incoming-webhook URL of space (send-only).
func (s *Server) IncomingWebhookURL(space string) string {
	return s.URL + "/v1/" + space + "/messages?key=" + s.hookKey + "&token=" + channeltest.RandomID(12)
}

// AddSpace registers a space.
func (s *Server) AddSpace(sp Space) {
	s.Lock()
	s.spaces[sp.Name] = sp
	s.Unlock()
}

// Created lists messages the app created in space ("" = all).
func (s *Server) Created(space string) []Created {
	return s.SentWhere(func(c Created) bool { return space == "" || c.Space == space })
}

// WaitCreated waits for a created message matching match.
func (s *Server) WaitCreated(ctx context.Context, match func(Created) bool) (Created, error) {
	return s.WaitSent(ctx, match)
}

// googleError writes the google.rpc.Status JSON error body.
func googleError(w http.ResponseWriter, code int, status, msg string) {
	writeJSON(w, code, map[string]any{"error": map[string]any{"code": code, "message": msg, "status": status}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// token implements the JWT bearer grant (RFC 7523) of oauth2.googleapis.com.
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	if r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unsupported_grant_type", "error_description": "Invalid grant_type: " + r.PostForm.Get("grant_type")})
		return
	}
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(r.PostForm.Get("assertion"), claims, func(*jwt.Token) (any, error) {
		return &s.saKey.PublicKey, nil
	}, jwt.WithValidMethods([]string{"RS256"}), jwt.WithAudience(s.URL+TokenPath), jwt.WithIssuer(s.ClientEmail))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
		return
	}
	scope, _ := claims["scope"].(string)
	if !strings.Contains(" "+scope+" ", " "+ChatScope+" ") {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_scope", "error_description": "Invalid OAuth scope or ID token audience provided."})
		return
	}
	tok := "ya29." + channeltest.RandomID(40)
	s.Lock()
	s.tokens[tok] = time.Now().Add(time.Hour)
	s.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"access_token": tok, "expires_in": 3599, "token_type": "Bearer"})
}

func (s *Server) bearerOK(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	if !strings.HasPrefix(h, "Bearer ") {
		return false
	}
	s.Lock()
	defer s.Unlock()
	exp, ok := s.tokens[strings.TrimPrefix(h, "Bearer ")]
	return ok && time.Now().Before(exp)
}

const unauthenticated = "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential."

func (s *Server) listSpaces(w http.ResponseWriter, r *http.Request) {
	if !s.bearerOK(r) {
		googleError(w, http.StatusUnauthorized, "UNAUTHENTICATED", unauthenticated)
		return
	}
	s.Lock()
	var list []Space
	for _, sp := range s.spaces {
		list = append(list, sp)
	}
	s.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"spaces": list})
}

func (s *Server) createMessage(w http.ResponseWriter, r *http.Request) {
	viaHook := r.URL.Query().Get("key") != ""
	if viaHook {
		if r.URL.Query().Get("key") != s.hookKey || r.URL.Query().Get("token") == "" {
			googleError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.")
			return
		}
	} else if !s.bearerOK(r) {
		googleError(w, http.StatusUnauthorized, "UNAUTHENTICATED", unauthenticated)
		return
	}
	space := "spaces/" + r.PathValue("space")
	s.Lock()
	sp, ok := s.spaces[space]
	s.Unlock()
	if !ok {
		googleError(w, http.StatusNotFound, "NOT_FOUND", "Requested entity was not found.")
		return
	}
	var m Message
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64*1024)).Decode(&m); err != nil {
		googleError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "Invalid JSON payload received.")
		return
	}
	if len(m.Text) > 4096 {
		googleError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "Message text is too long. The maximum is 4096 characters.")
		return
	}
	if m.Text == "" {
		googleError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "Message cannot be empty. Discarding empty message.")
		return
	}
	opt := r.URL.Query().Get("messageReplyOption")
	if m.Thread == nil || (m.Thread.Name == "" && m.Thread.ThreadKey == "") {
		m.Thread = &Thread{Name: space + "/threads/" + channeltest.RandomID(11)}
	} else if m.Thread.Name == "" {
		m.Thread.Name = space + "/threads/" + m.Thread.ThreadKey
	}
	m.Name = space + "/messages/" + channeltest.RandomID(11) + "." + channeltest.RandomID(11)
	m.Sender = &User{Name: "users/" + strconv.Itoa(100), DisplayName: "fangd", Type: "BOT"}
	m.CreateTime = time.Now().UTC().Format(time.RFC3339Nano)
	m.Space = &sp
	s.Lock()
	s.Record(Created{Space: space, Message: m, ReplyOption: opt, ViaWebhook: viaHook})
	s.Unlock()
	writeJSON(w, http.StatusOK, m)
}

func (s *Server) jwks(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"keys": []map[string]any{s.chatKey.JWK(map[string]any{"alg": "RS256"})}})
}

// Event describes a user's message for SendMessage.
type Event struct {
	Space     Space
	Sender    User
	Text      string
	Thread    string // thread name; "" = new thread
	Audience  string // default s.ProjectNumber
	EventType string // default MESSAGE
}

// SendMessage plays the Chat service: it POSTs a signed interaction event to
// the app's endpoint and returns the HTTP status.
func (s *Server) SendMessage(endpoint string, e Event) (int, error) {
	aud := e.Audience
	if aud == "" {
		aud = s.ProjectNumber
	}
	return s.Post(endpoint, s.EventBody(e), s.SignedToken(aud))
}

// EventBody builds the JSON of a classic Chat interaction event.
func (s *Server) EventBody(e Event) []byte {
	typ := e.EventType
	if typ == "" {
		typ = "MESSAGE"
	}
	thread := e.Thread
	if thread == "" {
		thread = e.Space.Name + "/threads/" + channeltest.RandomID(11)
	}
	sender := e.Sender
	if sender.Type == "" {
		sender.Type = "HUMAN"
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	msg := Message{Name: e.Space.Name + "/messages/" + channeltest.RandomID(11), Sender: &sender, CreateTime: now,
		Text: e.Text, ArgumentText: e.Text, Thread: &Thread{Name: thread}, Space: &e.Space}
	b, _ := json.Marshal(map[string]any{"type": typ, "eventTime": now, "message": msg, "user": sender, "space": e.Space,
		"configCompleteRedirectUrl": "https://chat.google.com/api/bot_config_complete?token=" + channeltest.RandomID(8)})
	return b
}

// SignedToken is a bearer token as Chat sends it for a project-number
// audience: a JWT from chat@system.gserviceaccount.com.
func (s *Server) SignedToken(audience string) string {
	now := time.Now()
	return s.chatKey.Sign(jwt.MapClaims{"iss": ChatIssuer, "aud": audience, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()})
}

// Post POSTs body to endpoint with the bearer token ("" = none).
func (s *Server) Post(endpoint string, body []byte, token string) (int, error) {
	return channeltest.Post(endpoint, body, channeltest.Header("User-Agent", "Google-Dynamite", "Authorization", channeltest.Bearer(token)))
}
