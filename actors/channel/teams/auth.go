package teams

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/kernel"
)

// keyRefresh is how often the signing keys are re-read; Microsoft rolls
// them over rarely and announces new ones in advance.
const keyRefresh = 12 * time.Hour

// loadKeys reads the OpenID metadata document, then the JWK set it names.
func (a *Adapter) loadKeys(ctx context.Context) error {
	var meta struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if err := a.getJSON(ctx, a.openidURL, &meta); err != nil {
		return fmt.Errorf("teams: OpenID metadata: %w", err)
	}
	if !strings.HasPrefix(meta.JWKSURI, "https://") && !strings.HasPrefix(meta.JWKSURI, "http://") {
		return errors.New("teams: OpenID metadata has no jwks_uri")
	}
	var raw json.RawMessage
	if err := a.getJSON(ctx, meta.JWKSURI, &raw); err != nil {
		return fmt.Errorf("teams: signing keys: %w", err)
	}
	if err := a.keys.Set(raw); err != nil {
		return fmt.Errorf("teams: signing keys: %w", err)
	}
	return nil
}

func (a *Adapter) getJSON(ctx context.Context, u string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out)
}

// connectorClaims are the claims of a Bot Connector token.
type connectorClaims struct {
	ServiceURL string `json:"serviceurl"`
	jwt.RegisteredClaims
}

// verify checks an Authorization header the way the Bot Connector
// authentication spec asks: a bearer JWT signed (RS256) by a key from the
// OpenID metadata, issuer https://api.botframework.com, audience our app
// id, not expired (5 minutes of clock skew allowed).
func (a *Adapter) verify(header string) (*connectorClaims, error) {
	raw, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || raw == "" {
		return nil, fmt.Errorf("teams: no bearer token: %w", channel.ErrBadSignature)
	}
	kf := a.keys.Keyfunc()
	if kf == nil {
		return nil, kernel.Unavailable("teams: the Bot Framework signing keys are not loaded yet")
	}
	var claims connectorClaims
	_, err := jwt.ParseWithClaims(raw, &claims, kf.Keyfunc,
		jwt.WithValidMethods([]string{"RS256"}), jwt.WithIssuer(connectorIssuer), jwt.WithAudience(a.appID),
		jwt.WithLeeway(5*time.Minute), jwt.WithExpirationRequired())
	if err != nil {
		a.keys.Rejected(err) // unknown key id: ask Run to re-read the keys
		return nil, fmt.Errorf("teams: token rejected (%v): %w", err, channel.ErrBadSignature)
	}
	return &claims, nil
}
