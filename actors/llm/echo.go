package llm

import (
	"context"
	"net/http"
	"strings"
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
	stop := "stop"
	if req.MaxTokens > 0 && int64(len(text)) > 4*int64(req.MaxTokens) {
		// Honour max_tokens as a real model would: stop at the cap.
		text, stop = text[:4*req.MaxTokens], "length"
	}
	return &Response{Text: text, Model: req.Model, StopReason: stop, Usage: estimateUsage(req, text), UsageEstimated: true}, nil
}

// stream hands the answer on a word at a time (each piece with the
// whitespace before the next word), so a streamed reply shows as one.
func (c echoClient) stream(ctx context.Context, hc *http.Client, prov, baseURL, key string, req Request, on OnDelta) (*Response, error) {
	r, err := c.chat(ctx, hc, prov, baseURL, key, req)
	if err != nil {
		return nil, err
	}
	rest := r.Text
	for rest != "" {
		if err := ctx.Err(); err != nil {
			return partialEcho(r, req, len(r.Text)-len(rest)), err
		}
		i := strings.IndexFunc(rest, func(c rune) bool { return c == ' ' || c == '\n' })
		if i < 0 {
			i = len(rest)
		} else {
			i++
		}
		if err := on(Delta{Text: rest[:i]}); err != nil {
			return partialEcho(r, req, len(r.Text)-len(rest)), err
		}
		rest = rest[i:]
	}
	return r, nil
}

// partialEcho is what a stream handed on before it stopped.
func partialEcho(r *Response, req Request, sent int) *Response {
	p := *r
	p.Text = r.Text[:sent]
	p.Usage = estimateUsage(req, p.Text)
	return &p
}
