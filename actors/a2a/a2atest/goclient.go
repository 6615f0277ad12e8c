package a2atest

import (
	"context"
	"testing"

	"github.com/a2aproject/a2a-go/v2/a2aclient"
	"github.com/a2aproject/a2a-go/v2/a2aclient/agentcard"
	"github.com/a2aproject/a2a-go/v2/a2acompat/a2av0"
)

// Bearer is an a2a-go client interceptor that sends Token as a bearer
// credential on every call.
type Bearer struct {
	a2aclient.PassthroughInterceptor
	Token string
}

// Before adds the Authorization header.
func (b Bearer) Before(ctx context.Context, req *a2aclient.Request) (context.Context, any, error) {
	req.ServiceParams.Append("Authorization", "Bearer "+b.Token)
	return ctx, nil, nil
}

// GoClient is an official a2a-go SDK client for the agent whose card
// (in the draft v0 shape fangd serves) is at base, authenticated with
// token.
func GoClient(t testing.TB, base, token string) *a2aclient.Client {
	t.Helper()
	ctx := context.Background()
	card, err := (&agentcard.Resolver{CardParser: a2av0.NewAgentCardParser()}).Resolve(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	c, err := a2aclient.NewFromCard(ctx, card, a2aclient.WithCallInterceptors(Bearer{Token: token}))
	if err != nil {
		t.Fatal(err)
	}
	return c
}
