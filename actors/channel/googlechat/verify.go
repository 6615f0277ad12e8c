package googlechat

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/fangd/fangd/actors/channel"
)

// keyRefresh: Google rotates these keys about daily and publishes the next
// one in advance.
const keyRefresh = 6 * time.Hour

func (a *Adapter) loadKeys(ctx context.Context) error { return a.keys.Fetch(ctx, a.http, a.certsURL) }

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
	opts := []jwt.ParserOption{jwt.WithAudience(a.audience), jwt.WithLeeway(time.Minute)}
	if a.byNumber {
		opts = append(opts, jwt.WithIssuer(chatIssuer))
	}
	var c idClaims
	if err := a.keys.Verify(header, &c, opts...); err != nil {
		return err
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
