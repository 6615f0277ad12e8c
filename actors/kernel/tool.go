package kernel

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// StartToolCall begins one call of a tool that local agents use to reach
// another domain (a2a_send, ofp_send): it decodes raw into args strictly
// (an unknown field is refused, so a model's typo is an error it can read,
// named after tool), and bounds ctx by timeout when the caller set no
// deadline, since a model's call must end. Call cancel when done.
func StartToolCall(ctx context.Context, tool string, raw json.RawMessage, args any, timeout time.Duration) (context.Context, context.CancelFunc, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(args); err != nil {
		return ctx, func() {}, fmt.Errorf("%s: bad arguments: %s", tool, err.Error())
	}
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	return ctx, cancel, nil
}
