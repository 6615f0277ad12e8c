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
		n += int64(len(m.Content)) + perMessageOverhead
	}
	return n
}

// TypicalTokens guesses the tokens of text (about 4 bytes per token).
func TypicalTokens(text string) int64 { return (int64(len(text)) + 3) / 4 }

func estimateUsage(req Request, answer string) Usage {
	in := int64(primingOverhead) + TypicalTokens(req.System)
	for _, m := range req.Messages {
		in += TypicalTokens(m.Content) + perMessageOverhead
	}
	out := TypicalTokens(answer)
	if req.MaxTokens > 0 {
		out = min(out, int64(req.MaxTokens))
	}
	return Usage{InputTokens: in, OutputTokens: out}
}
