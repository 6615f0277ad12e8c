package googlechat

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/kernel"
)

// keyRefresh: Google rotates these keys about daily and publishes the next
// one in advance.
const keyRefresh = 6 * time.Hour

func (a *Adapter) loadKeys(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.certsURL, nil)
	if err != nil {
		return channel.Permanent(err)
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return fmt.Errorf("google_chat: signing keys: %w", channel.NetCause(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("google_chat: signing keys: HTTP %d", resp.StatusCode)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("google_chat: signing keys: %w", err)
	}
	if err := a.keys.Set(raw); err != nil {
		return fmt.Errorf("google_chat: signing keys: %w", err)
	}
	return nil
}

// idClaims covers both token kinds Chat sends: a JWT from
// chat@system.gserviceaccount.com (project-number audience) or a Google ID
// token whose email is that account (endpoint-URL audience).
type idClaims struct {
	Email         string `json:"email"`
	EmailVerified bool   `json:"email_verified"`
	jwt.RegisteredClaims
}

// verifyBearer checks the Authorization header as Google documents it.
func (a *Adapter) verifyBearer(header string) error {
	raw, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || raw == "" {
		return fmt.Errorf("google_chat: no bearer token: %w", channel.ErrBadSignature)
	}
	kf := a.keys.Keyfunc()
	if kf == nil {
		return kernel.Unavailable("google_chat: Google's signing keys are not loaded yet")
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods([]string{"RS256"}), jwt.WithAudience(a.audience),
		jwt.WithExpirationRequired(), jwt.WithLeeway(time.Minute)}
	if a.byNumber {
		opts = append(opts, jwt.WithIssuer(chatIssuer))
	}
	var c idClaims
	if _, err := jwt.ParseWithClaims(raw, &c, kf.Keyfunc, opts...); err != nil {
		a.keys.Rejected(err)
		return fmt.Errorf("google_chat: token rejected (%v): %w", err, channel.ErrBadSignature)
	}
	if !a.byNumber {
		iss, _ := c.GetIssuer()
		if (iss != "https://accounts.google.com" && iss != "accounts.google.com") || c.Email != chatIssuer || !c.EmailVerified {
			return fmt.Errorf("google_chat: ID token is not from Google Chat: %w", channel.ErrBadSignature)
		}
	}
	return nil
}

// event is a Chat interaction event (the classic format).
type event struct {
	Type  string `json:"type"`
	Token string `json:"token"` // legacy verification token
	Space struct {
		Name      string `json:"name"`
		Type      string `json:"type"`
		SpaceType string `json:"spaceType"`
	} `json:"space"`
	Message struct {
		Name         string `json:"name"`
		Text         string `json:"text"`
		ArgumentText string `json:"argumentText"`
		CreateTime   string `json:"createTime"`
		Sender       struct {
			Name        string `json:"name"`
			DisplayName string `json:"displayName"`
			Type        string `json:"type"`
		} `json:"sender"`
		Thread struct {
			Name string `json:"name"`
		} `json:"thread"`
	} `json:"message"`
}

// Webhook verifies an interaction event and turns a MESSAGE into an
// inbound message. Other events (ADDED_TO_SPACE, CARD_CLICKED...) are
// acknowledged with an empty answer, which Chat takes as "no reply".
func (a *Adapter) Webhook(ctx context.Context, req *channel.WebhookRequest) (*channel.WebhookResponse, []channel.Inbound, error) {
	if req.Method != http.MethodPost {
		return &channel.WebhookResponse{Status: http.StatusMethodNotAllowed}, nil, nil
	}
	if a.audience != "" {
		if err := a.verifyBearer(req.Header.Get("Authorization")); err != nil {
			return nil, nil, err
		}
	}
	var ev event
	if err := json.Unmarshal(req.Body, &ev); err != nil {
		return nil, nil, fmt.Errorf("google_chat: event is not JSON: %w", err)
	}
	if a.audience == "" && subtle.ConstantTimeCompare([]byte(ev.Token), []byte(a.legacy)) != 1 {
		return nil, nil, fmt.Errorf("google_chat: verification token mismatch: %w", channel.ErrBadSignature)
	}
	m := ev.Message
	if ev.Type != "MESSAGE" || m.Sender.Type == "BOT" || !spaceName.MatchString(ev.Space.Name) {
		return nil, nil, nil
	}
	// argumentText is the text without the app's @mention.
	text := strings.TrimSpace(m.ArgumentText)
	if text == "" {
		text = strings.TrimSpace(m.Text)
	}
	if text == "" {
		return nil, nil, nil
	}
	at, err := time.Parse(time.RFC3339Nano, m.CreateTime)
	if err != nil {
		at = time.Now()
	}
	name := m.Sender.DisplayName
	if name == "" {
		name = m.Sender.Name
	}
	return nil, []channel.Inbound{{ChatID: ev.Space.Name, UserID: m.Sender.Name, UserName: name, Text: text,
		MessageID: m.Name, ThreadID: m.Thread.Name, Direct: ev.Space.Type == "DM" || ev.Space.SpaceType == "DIRECT_MESSAGE",
		At: at}}, nil
}
