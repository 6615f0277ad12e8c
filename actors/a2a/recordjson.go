package a2a

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/a2aproject/a2a-go/v2/a2a"

	"github.com/fangd/fangd/store"
)

// appendRecord appends r's JSON, as the journal stores it. It decodes to
// exactly what json.Marshal(r) decodes to (strings are not HTML-escaped;
// nothing else differs), without reflection for the shapes every task
// has: text parts, messages and artifacts without metadata or extensions.
// Anything else (data parts, metadata, push targets, usage) is encoded by
// encoding/json, element by element. The SDK's types flatten each part
// through a Marshaler that encodes a wrapper and is then validated and
// compacted by the caller's encoder; for a task's final record that was
// most of the A2A package's own CPU (docs/bench.md, "Session 9: A2A").
// TestAppendRecordDecodesAsJSONMarshal holds it to json.Marshal.
func appendRecord(b []byte, r *taskRecord) ([]byte, error) {
	var err error
	b = append(b, `{"id":`...)
	b = store.AppendJSONString(b, r.ID)
	b = append(b, `,"direction":`...)
	b = store.AppendJSONString(b, r.Direction)
	b = append(b, `,"agent_id":`...)
	b = store.AppendJSONString(b, r.AgentID)
	b = appendOptString(b, `,"agent_name":`, r.AgentName)
	b = append(b, `,"context_id":`...)
	b = store.AppendJSONString(b, r.ContextID)
	b = append(b, `,"state":`...)
	b = store.AppendJSONString(b, r.State.String())
	b = appendOptString(b, `,"reason":`, r.Reason)
	b = append(b, `,"history":`...)
	if r.History == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, m := range r.History {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = appendMessage(b, m, store.AppendJSONString); err != nil {
				return nil, err
			}
		}
		b = append(b, ']')
	}
	if len(r.Artifacts) > 0 {
		b = append(b, `,"artifacts":[`...)
		for i, a := range r.Artifacts {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = appendArtifact(b, a, store.AppendJSONString); err != nil {
				return nil, err
			}
		}
		b = append(b, ']')
	}
	b = appendOptString(b, `,"caller":`, r.Caller)
	b = append(b, `,"created_at":`...)
	if b, err = appendTime(b, r.CreatedAt); err != nil {
		return nil, err
	}
	b = append(b, `,"updated_at":`...)
	if b, err = appendTime(b, r.UpdatedAt); err != nil {
		return nil, err
	}
	if r.Usage != nil {
		b = append(b, `,"usage":`...)
		if b, err = appendMarshal(b, r.Usage); err != nil {
			return nil, err
		}
	}
	if len(r.Push) > 0 {
		b = append(b, `,"push":`...)
		if b, err = appendMarshal(b, r.Push); err != nil {
			return nil, err
		}
	}
	b = appendOptString(b, `,"remote_task_id":`, r.RemoteTaskID)
	b = appendOptString(b, `,"remote_context_id":`, r.RemoteContextID)
	if r.Attempts != 0 {
		b = append(b, `,"attempts":`...)
		b = strconv.AppendInt(b, int64(r.Attempts), 10)
	}
	b = appendOptString(b, `,"last_error":`, r.LastError)
	if r.Streaming {
		b = append(b, `,"streaming":true`...)
	}
	return append(b, '}'), nil
}

func appendOptString(b []byte, key, s string) []byte {
	if s == "" {
		return b
	}
	return store.AppendJSONString(append(b, key...), s)
}

// appendTime is time.Time's MarshalJSON without its allocation.
func appendTime(b []byte, t time.Time) ([]byte, error) {
	b = append(b, '"')
	b, err := t.AppendText(b)
	if err != nil {
		return nil, err
	}
	return append(b, '"'), nil
}

func appendMarshal(b []byte, v any) ([]byte, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append(b, raw...), nil
}

// appendString appends a JSON string: store.AppendJSONString (the
// journal's records) or appendHTMLString (answers the SDK would write).
type appendString func(b []byte, s string) []byte

// appendHTMLString quotes s exactly as json.Marshal does, HTML escaping on.
func appendHTMLString(b []byte, s string) []byte {
	if strings.ContainsAny(s, "<>&") {
		raw, _ := json.Marshal(s) // a string always encodes
		return append(b, raw...)
	}
	return store.AppendJSONString(b, s)
}

func appendOptStr(b []byte, key, s string, str appendString) []byte {
	if s == "" {
		return b
	}
	return str(append(b, key...), s)
}

// appendMessage encodes an SDK message as its json tags and Marshalers do.
func appendMessage(b []byte, m *a2a.Message, str appendString) ([]byte, error) {
	if m == nil {
		return append(b, "null"...), nil
	}
	if len(m.Extensions) > 0 || len(m.Metadata) > 0 || len(m.ReferenceTasks) > 0 {
		return appendMarshal(b, m)
	}
	b = append(b, `{"messageId":`...)
	b = str(b, m.ID)
	b = appendOptStr(b, `,"contextId":`, m.ContextID, str)
	b = append(b, `,"parts":`...)
	b, err := appendParts(b, m.Parts, str)
	if err != nil {
		return nil, err
	}
	b = append(b, `,"role":`...)
	b = str(b, m.Role.String())
	b = appendOptStr(b, `,"taskId":`, string(m.TaskID), str)
	return append(b, '}'), nil
}

func appendArtifact(b []byte, a *a2a.Artifact, str appendString) ([]byte, error) {
	if a == nil {
		return append(b, "null"...), nil
	}
	if len(a.Extensions) > 0 || len(a.Metadata) > 0 {
		return appendMarshal(b, a)
	}
	b = append(b, `{"artifactId":`...)
	b = str(b, string(a.ID))
	b = appendOptStr(b, `,"description":`, a.Description, str)
	b = appendOptStr(b, `,"name":`, a.Name, str)
	b = append(b, `,"parts":`...)
	b, err := appendParts(b, a.Parts, str)
	if err != nil {
		return nil, err
	}
	return append(b, '}'), nil
}

// appendParts encodes ContentParts: a text part as {"text":...}, any
// other part by its own Marshaler.
func appendParts(b []byte, parts a2a.ContentParts, str appendString) ([]byte, error) {
	if parts == nil {
		return append(b, "null"...), nil
	}
	b = append(b, '[')
	for i, p := range parts {
		if i > 0 {
			b = append(b, ',')
		}
		if p == nil {
			b = append(b, "null"...)
			continue
		}
		text, ok := p.Content.(a2a.Text)
		if !ok || p.Filename != "" || p.MediaType != "" || len(p.Metadata) > 0 {
			var err error
			if b, err = appendMarshal(b, p); err != nil {
				return nil, err
			}
			continue
		}
		b = append(b, `{"text":`...)
		b = str(b, string(text))
		b = append(b, '}')
	}
	return append(b, ']'), nil
}

// appendTaskAnswer appends the JSON-RPC success answer carrying t, byte
// for byte what json.Marshal(rpcResult{..., a2a.StreamResponse{Event: t}})
// writes: the SDK's StreamResponse wraps the task as {"task":...}.
// ServeSendMessage's answer is the biggest JSON it writes per request;
// TestAppendTaskAnswerIsJSONMarshal holds the two to the same bytes.
func appendTaskAnswer(b []byte, id any, t *a2a.Task) ([]byte, error) {
	if len(t.Metadata) > 0 {
		return appendMarshal(b, rpcResult{JSONRPC: "2.0", ID: id, Result: a2a.StreamResponse{Event: t}})
	}
	b = append(b, `{"jsonrpc":"2.0","id":`...)
	switch v := id.(type) {
	case nil:
		b = append(b, "null"...)
	case string:
		b = appendHTMLString(b, v)
	case float64:
		// encoding/json's 'f' range; the rest (exponents) by it.
		if a := math.Abs(v); a == 0 || a >= 1e-6 && a < 1e21 {
			b = strconv.AppendFloat(b, v, 'f', -1, 64)
		} else {
			var err error
			if b, err = appendMarshal(b, v); err != nil {
				return nil, err
			}
		}
	default:
		var err error
		if b, err = appendMarshal(b, v); err != nil {
			return nil, err
		}
	}
	b = append(b, `,"result":{"task":{"id":`...)
	b = appendHTMLString(b, string(t.ID))
	var err error
	if len(t.Artifacts) > 0 {
		b = append(b, `,"artifacts":[`...)
		for i, a := range t.Artifacts {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = appendArtifact(b, a, appendHTMLString); err != nil {
				return nil, err
			}
		}
		b = append(b, ']')
	}
	b = append(b, `,"contextId":`...)
	b = appendHTMLString(b, t.ContextID)
	if len(t.History) > 0 {
		b = append(b, `,"history":[`...)
		for i, m := range t.History {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = appendMessage(b, m, appendHTMLString); err != nil {
				return nil, err
			}
		}
		b = append(b, ']')
	}
	b = append(b, `,"status":{`...)
	if t.Status.Message != nil {
		b = append(b, `"message":`...)
		if b, err = appendMessage(b, t.Status.Message, appendHTMLString); err != nil {
			return nil, err
		}
		b = append(b, ',')
	}
	b = append(b, `"state":`...)
	b = appendHTMLString(b, t.Status.State.String())
	if t.Status.Timestamp != nil {
		b = append(b, `,"timestamp":`...)
		if b, err = appendTime(b, *t.Status.Timestamp); err != nil {
			return nil, err
		}
	}
	return append(b, "}}}}"...), nil
}
