package llm

import (
	"context"
	"net/http"
)

// APIEcho is the built-in test provider: a [providers.<name>] table with
// api = "echo" answers every call with the text of the conversation's last
// message, offline and free. It exists so a user with no paid key (and CI)
// can run the whole flow — agents, comms, channels, budgets — and it is
// never on unless configured: no well-known provider uses it.
//
// It is labelled as what it is everywhere it shows: GET /api/providers
// says api "echo", the catalog prices its models at 0 with source
// "echo_test_provider", and each answer's usage is estimated
// (UsageEstimated, TypicalTokens: about 4 bytes per token, the same
// estimate fangd uses for real providers that report no usage) because
// there is no tokenizer behind it.
const APIEcho = "echo"

// echoSource is the catalog source of an echo provider's models.
const echoSource = "echo_test_provider"

type echoClient struct{}

func (echoClient) chat(ctx context.Context, _ *http.Client, _, _, _ string, req Request) (*Response, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var text string
	if n := len(req.Messages); n > 0 {
		text = req.Messages[n-1].Content
	}
	if req.MaxTokens > 0 && int64(len(text)) > 4*int64(req.MaxTokens) {
		// Honour max_tokens as a real model would: stop at the cap.
		text = text[:4*req.MaxTokens]
		return &Response{Text: text, Model: req.Model, StopReason: "length", Usage: estimateUsage(req, text), UsageEstimated: true}, nil
	}
	return &Response{Text: text, Model: req.Model, StopReason: "stop", Usage: estimateUsage(req, text), UsageEstimated: true}, nil
}
