package teams

import (
	"context"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// keyRefresh is how often the signing keys are re-read; Microsoft rolls
// them over rarely and announces new ones in advance.
const keyRefresh = 12 * time.Hour

// loadKeys reads the OpenID metadata document, then the JWK set it names.
func (a *Adapter) loadKeys(ctx context.Context) error {
	return a.keys.FetchOpenID(ctx, a.http, a.openidURL)
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
	var claims connectorClaims
	if err := a.keys.Verify(header, &claims, jwt.WithIssuer(connectorIssuer), jwt.WithAudience(a.appID),
		jwt.WithLeeway(5*time.Minute)); err != nil {
		return nil, err
	}
	return &claims, nil
}
