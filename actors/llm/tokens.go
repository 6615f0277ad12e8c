package llm

// Token counts without a tokenizer. Two estimates, for two jobs:
//
//   - PromptTokensUpperBound is what the budget ledger reserves. Every
//     tokenizer the supported providers use is byte-level BPE (or
//     SentencePiece with byte fallback), where a token covers at least one
//     byte of UTF-8, so the byte count plus the chat template's per-message
//     framing can never be below the real count. It is pessimistic (about
//     4x for English) on purpose: a reservation must cover the worst case.
//   - TypicalTokens is a ~4 bytes per token guess, for trimming history to
//     a context window and for providers that report no usage.

// perMessageOverhead covers the role markers a chat template wraps around
// each message; primingOverhead the tokens that start the reply.
const (
	perMessageOverhead = 8
	primingOverhead    = 16
)

// PromptTokensUpperBound bounds the prompt tokens of a request from above.
func PromptTokensUpperBound(system string, msgs []Message) int64 {
	n := int64(primingOverhead)
	if system != "" {
		n += int64(len(system)) + perMessageOverhead
	}
	for _, m := range msgs {
		n += int64(len(m.Content)+len(m.ToolCallID)) + perMessageOverhead
		for _, tc := range m.ToolCalls {
			n += int64(len(tc.ID)+len(tc.Name)+len(tc.Arguments)) + perMessageOverhead
		}
	}
	return n
}

// ToolsTokensUpperBound bounds the prompt tokens that offering tools adds
// (each definition is rendered into the prompt by the provider).
func ToolsTokensUpperBound(tools []Tool) int64 {
	var n int64
	for _, t := range tools {
		n += int64(len(t.Name)+len(t.Description)+len(schemaOf(t))) + 2*perMessageOverhead
	}
	return n
}

// TypicalTokens guesses the tokens of text (about 4 bytes per token).
func TypicalTokens(text string) int64 { return (int64(len(text)) + 3) / 4 }

func estimateUsage(req Request, answer string) Usage {
	in := int64(primingOverhead) + TypicalTokens(req.System)
	for _, m := range req.Messages {
		in += TypicalTokens(m.Content) + perMessageOverhead
		for _, tc := range m.ToolCalls {
			in += TypicalTokens(string(tc.Arguments)) + perMessageOverhead
		}
	}
	for _, t := range req.Tools {
		in += TypicalTokens(t.Name+t.Description+string(schemaOf(t))) + perMessageOverhead
	}
	out := TypicalTokens(answer)
	if req.MaxTokens > 0 {
		out = min(out, int64(req.MaxTokens))
	}
	return Usage{InputTokens: in, OutputTokens: out}
}

// callsText is the part of an answer that tool calls add, for estimates.
func callsText(calls []ToolCall) string {
	var b []byte
	for _, c := range calls {
		b = append(b, c.Name...)
		b = append(b, c.Arguments...)
	}
	return string(b)
}
