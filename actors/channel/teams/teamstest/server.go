// Package teamstest is an in-process stand-in for the Microsoft side of a
// Teams bot: the Entra ID (AAD) token endpoint for the bot's client
// credentials, the Bot Framework OpenID metadata and signing keys, the Bot
// Connector REST API a bot replies through, and the channel service that
// POSTs signed activities to the bot's messaging endpoint. Paths, headers,
// bodies and error shapes follow Microsoft's Bot Connector documentation.
package teamstest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/fangd/fangd/actors/channel/channeltest"
)

// Issuer is the issuer of tokens the Bot Connector service sends to bots.
const Issuer = "https://api.botframework.com"

// Paths of the endpoints the fake serves.
const (
	TokenPath    = "/botframework.com/oauth2/v2.0/token"
	MetadataPath = "/v1/.well-known/openidconfiguration"
	KeysPath     = "/v1/.well-known/keys"
)

// Activity is a Bot Framework activity (subset).
type Activity struct {
	Type         string          `json:"type"`
	ID           string          `json:"id,omitempty"`
	Timestamp    string          `json:"timestamp,omitempty"`
	ServiceURL   string          `json:"serviceUrl,omitempty"`
	ChannelID    string          `json:"channelId,omitempty"`
	From         *Account        `json:"from,omitempty"`
	Conversation *Conversation   `json:"conversation,omitempty"`
	Recipient    *Account        `json:"recipient,omitempty"`
	Text         string          `json:"text,omitempty"`
	TextFormat   string          `json:"textFormat,omitempty"`
	ReplyToID    string          `json:"replyToId,omitempty"`
	ChannelData  json.RawMessage `json:"channelData,omitempty"`
}

// Account is a channel account.
type Account struct {
	ID          string `json:"id"`
	Name        string `json:"name,omitempty"`
	AADObjectID string `json:"aadObjectId,omitempty"`
}

// Conversation is a conversation account.
type Conversation struct {
	ID               string `json:"id"`
	IsGroup          bool   `json:"isGroup,omitempty"`
	ConversationType string `json:"conversationType,omitempty"`
	TenantID         string `json:"tenantId,omitempty"`
}

// Sent is an activity the bot sent to the connector.
type Sent struct {
	ConversationID string
	ReplyToID      string
	Activity       Activity
}

// Server is the fake. Create with New, Close when done.
type Server struct {
	*httptest.Server
	AppID, AppPassword, TenantID string

	key channeltest.SigningKey // signs the activities the fake pushes

	channeltest.Recorder[Sent]

	convs  map[string]bool
	issued map[string]time.Time // access token -> expiry
}

// New starts a fake for a bot registered as appID/password in tenant
// "tenant-1". Conversations are created by SendMessage.
func New(appID, password string) *Server {
	s := &Server{AppID: appID, AppPassword: password, TenantID: "tenant-1", key: channeltest.NewSigningKey("fake-key-1"),
		convs: map[string]bool{}, issued: map[string]time.Time{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+TokenPath, s.token)
	mux.HandleFunc("POST /{tenant}/oauth2/v2.0/token", s.token)
	mux.HandleFunc("GET "+MetadataPath, s.metadata)
	mux.HandleFunc("GET "+KeysPath, s.keys)
	mux.HandleFunc("POST /v3/conversations/{conv}/activities", s.sendActivity)
	mux.HandleFunc("POST /v3/conversations/{conv}/activities/{id}", s.sendActivity)
	s.Server = httptest.NewServer(s.Gate(channeltest.Gate{
		// Token requests are counted under "POST "+TokenPath whatever the
		// tenant segment.
		Route: func(r *http.Request) string {
			if strings.HasSuffix(r.URL.Path, "/oauth2/v2.0/token") {
				return "POST " + TokenPath
			}
			return r.Method + " " + r.URL.Path
		},
		// The Bot Connector limits a bot that sends too fast; AAD does not.
		Limits: func(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, "/v3/") },
		Down:   func(w http.ResponseWriter) { http.Error(w, "Service Unavailable", http.StatusServiceUnavailable) },
		Limited: func(w http.ResponseWriter, wait int) {
			w.Header().Set("Retry-After", strconv.Itoa(wait))
			writeJSON(w, http.StatusTooManyRequests, map[string]any{"error": map[string]string{
				"code": "TooManyRequests", "message": "Too many requests. Please retry after some time."}})
		},
	}, mux))
	return s
}

// TokenURL is the AAD token endpoint to configure in the bot.
func (s *Server) TokenURL() string { return s.URL + TokenPath }

// MetadataURL is the OpenID metadata URL to configure in the bot.
func (s *Server) MetadataURL() string { return s.URL + MetadataPath }

// Sent returns the activities the bot sent to conversationID ("" = all).
func (s *Server) Sent(conversationID string) []Sent {
	return s.SentWhere(func(a Sent) bool { return conversationID == "" || a.ConversationID == conversationID })
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// token implements the client-credentials grant of the Microsoft identity
// platform v2.0 endpoint.
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeJSON(w, http.StatusBadRequest, aadError("invalid_request", "AADSTS900144: The request body must contain the following parameter: 'grant_type'.", 900144))
		return
	}
	id, secret, basic := r.BasicAuth()
	if !basic {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	switch {
	case r.PostForm.Get("grant_type") != "client_credentials":
		writeJSON(w, http.StatusBadRequest, aadError("unsupported_grant_type", "AADSTS70003: The app requested an unsupported grant type.", 70003))
	case r.PostForm.Get("scope") != "https://api.botframework.com/.default":
		writeJSON(w, http.StatusBadRequest, aadError("invalid_scope", "AADSTS1002012: The provided value for scope is not valid.", 1002012))
	case id != s.AppID:
		writeJSON(w, http.StatusBadRequest, aadError("unauthorized_client", "AADSTS700016: Application with identifier '"+id+"' was not found in the directory 'Bot Framework'.", 700016))
	case secret != s.AppPassword:
		writeJSON(w, http.StatusUnauthorized, aadError("invalid_client", "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.", 7000215))
	default:
		tok := channeltest.RandomID(32)
		s.Lock()
		s.issued[tok] = time.Now().Add(time.Hour)
		s.Unlock()
		writeJSON(w, http.StatusOK, map[string]any{"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": tok})
	}
}

func aadError(code, desc string, n int) map[string]any {
	return map[string]any{"error": code, "error_description": desc, "error_codes": []int{n},
		"timestamp": time.Now().UTC().Format("2006-01-02 15:04:05Z"), "trace_id": channeltest.RandomID(8), "correlation_id": channeltest.RandomID(8)}
}

func (s *Server) metadata(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                Issuer,
		"authorization_endpoint":                "https://invalid.botframework.com",
		"jwks_uri":                              s.URL + KeysPath,
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"token_endpoint_auth_methods_supported": []string{"private_key_jwt"},
	})
}

func (s *Server) keys(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"keys": []map[string]any{s.key.JWK(map[string]any{"endorsements": []string{"msteams", "webchat"}})}})
}

func (s *Server) sendActivity(w http.ResponseWriter, r *http.Request) {
	auth := r.Header.Get("Authorization")
	s.Lock()
	exp, ok := s.issued[strings.TrimPrefix(auth, "Bearer ")]
	s.Unlock()
	if !strings.HasPrefix(auth, "Bearer ") || !ok || time.Now().After(exp) {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"message": "Authorization has been denied for this request."})
		return
	}
	conv := r.PathValue("conv")
	s.Lock()
	known := s.convs[conv]
	s.Unlock()
	if !known {
		writeJSON(w, http.StatusNotFound, map[string]any{"error": map[string]string{"code": "ConversationNotFound", "message": "Conversation not found."}})
		return
	}
	body := http.MaxBytesReader(w, r.Body, 256*1024)
	var a Activity
	if err := json.NewDecoder(body).Decode(&a); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": map[string]string{"code": "BadArgument", "message": "Invalid activity."}})
		return
	}
	if len(a.Text) > 28*1024 {
		writeJSON(w, http.StatusRequestEntityTooLarge, map[string]any{"error": map[string]string{"code": "MessageSizeTooBig", "message": "Message size too big."}})
		return
	}
	if a.Type == "" {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": map[string]string{"code": "MissingProperty", "message": "Activity type is required."}})
		return
	}
	id := "1:" + channeltest.RandomID(12)
	s.Lock()
	s.Record(Sent{ConversationID: conv, ReplyToID: r.PathValue("id"), Activity: a})
	s.Unlock()
	writeJSON(w, http.StatusCreated, map[string]string{"id": id})
}

// Message describes a user's message for SendMessage.
type Message struct {
	ConversationID string
	IsGroup        bool
	From           Account
	Text           string
	TenantID       string // default s.TenantID
}

// SendMessage plays the Teams channel service: it POSTs a signed "message"
// activity to the bot's messaging endpoint and returns the HTTP status.
func (s *Server) SendMessage(endpoint string, m Message) (int, error) {
	a := s.Activity(m)
	return s.Post(endpoint, a, s.SignedToken(s.AppID, s.URL))
}

// Activity builds the inbound activity SendMessage would send; it also
// registers the conversation so replies to it are accepted.
func (s *Server) Activity(m Message) Activity {
	tenant := m.TenantID
	if tenant == "" {
		tenant = s.TenantID
	}
	s.Lock()
	s.convs[m.ConversationID] = true
	s.Unlock()
	cd, _ := json.Marshal(map[string]any{"tenant": map[string]string{"id": tenant}})
	ct := "personal"
	if m.IsGroup {
		ct = "groupChat"
	}
	return Activity{
		Type: "message", ID: "1" + channeltest.RandomID(12), Timestamp: time.Now().UTC().Format(time.RFC3339Nano),
		ServiceURL: s.URL + "/", ChannelID: "msteams", From: &m.From,
		Conversation: &Conversation{ID: m.ConversationID, IsGroup: m.IsGroup, ConversationType: ct, TenantID: tenant},
		Recipient:    &Account{ID: "28:" + s.AppID, Name: "fangd"}, Text: m.Text, TextFormat: "plain", ChannelData: cd,
	}
}

// SignedToken is a Bot Connector JWT for audience with serviceurl claim,
// signed by the fake's published key.
func (s *Server) SignedToken(audience, serviceURL string) string {
	now := time.Now()
	return s.key.Sign(jwt.MapClaims{"iss": Issuer, "aud": audience, "serviceurl": serviceURL + "/",
		"nbf": now.Add(-time.Minute).Unix(), "exp": now.Add(time.Hour).Unix()})
}

// ForgedToken is a token with the right claims signed by a key the fake
// does not publish.
func (s *Server) ForgedToken() string {
	return channeltest.NewSigningKey(s.key.Kid).Sign(jwt.MapClaims{
		"iss": Issuer, "aud": s.AppID, "serviceurl": s.URL + "/", "exp": time.Now().Add(time.Hour).Unix()})
}

// Post POSTs activity to endpoint with "Authorization: Bearer token" ("" =
// no header) and returns the status.
func (s *Server) Post(endpoint string, a Activity, token string) (int, error) {
	body, _ := json.Marshal(a)
	return channeltest.Post(endpoint, body, channeltest.Header("Content-Type", "application/json; charset=utf-8", "Authorization", channeltest.Bearer(token)))
}
