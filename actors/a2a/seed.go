package a2a

import (
	"bytes"
	"encoding/json"
	"strings"
	"time"

	"github.com/a2aproject/a2a-go/v2/a2a"
	"github.com/google/uuid"
)

// The seed's REST shapes (/a2a/tasks/*, /api/a2a/*): a message is
// {"role", "parts": [{"text"}]} and a task is {"task_id", "status",
// "result"}. LibreFang's own variants are accepted too: parts tagged with
// "type" ("text", "data", "file") and status strings in its spelling.

// SeedStatus maps a spec state onto the seed's status strings (LibreFang
// spells "cancelled" and "inputRequired").
func SeedStatus(s a2a.TaskState) string {
	switch s {
	case a2a.TaskStateSubmitted:
		return "submitted"
	case a2a.TaskStateWorking:
		return "working"
	case a2a.TaskStateInputRequired:
		return "inputRequired"
	case a2a.TaskStateAuthRequired:
		return "authRequired"
	case a2a.TaskStateCompleted:
		return "completed"
	case a2a.TaskStateCanceled:
		return "cancelled"
	case a2a.TaskStateFailed:
		return "failed"
	case a2a.TaskStateRejected:
		return "rejected"
	}
	return "unknown"
}

// SeedPart is one part of a seed message.
type SeedPart struct {
	// Type (LibreFang) or Kind (A2A 0.3) names the part; a part with only
	// "text" is text.
	Type     string          `json:"type,omitempty"`
	Kind     string          `json:"kind,omitempty"`
	Text     *string         `json:"text,omitempty"`
	Data     json.RawMessage `json:"data,omitempty"`
	MimeType string          `json:"mime_type,omitempty"`
	Name     string          `json:"name,omitempty"`
}

// SeedMessage is the seed's message.
type SeedMessage struct {
	Role  string     `json:"role"`
	Parts []SeedPart `json:"parts"`
}

// MessageInput is a message in a request body: the seed's object or, for
// POST /api/a2a/send, a bare string.
type MessageInput struct {
	SeedMessage
	set bool
}

// UnmarshalJSON accepts a string or a SeedMessage object.
func (m *MessageInput) UnmarshalJSON(b []byte) error {
	m.set = true
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		m.SeedMessage = SeedMessage{Role: "user", Parts: []SeedPart{{Text: &s}}}
		return nil
	}
	if bytes.Equal(b, []byte("null")) {
		m.set = false
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(&m.SeedMessage)
}

// IsSet reports whether the field was present and not null.
func (m *MessageInput) IsSet() bool { return m.set }

// maxMessageBytes bounds the text of one message (the protocol routes cap
// whole bodies at 1 MiB; this catches the same on the management side).
const maxMessageBytes = 1 << 20

// ToA2A validates a seed message and converts it to the protocol's. The
// role must be the user's; parts must be text or data (the agents read
// text; data is handed to them as JSON).
func (m *SeedMessage) ToA2A() (*a2a.Message, error) {
	switch strings.ToLower(m.Role) {
	case "", "user", "role_user":
	default:
		return nil, errInvalidMessage("message role must be \"user\", not %q", m.Role)
	}
	if len(m.Parts) == 0 {
		return nil, errInvalidMessage("message has no parts; send at least one {\"text\": \"...\"}")
	}
	msg := &a2a.Message{ID: uuid.NewString(), Role: a2a.MessageRoleUser}
	size := 0
	for i, p := range m.Parts {
		kind := strings.ToLower(p.Type)
		if kind == "" {
			kind = strings.ToLower(p.Kind)
		}
		if kind == "" {
			switch {
			case p.Text != nil:
				kind = "text"
			case len(p.Data) > 0:
				kind = "data"
			}
		}
		switch kind {
		case "text":
			if p.Text == nil {
				return nil, errInvalidMessage("part %d is a text part without \"text\"", i)
			}
			size += len(*p.Text)
			msg.Parts = append(msg.Parts, a2a.NewTextPart(*p.Text))
		case "data":
			var v any
			if err := json.Unmarshal(p.Data, &v); err != nil || len(p.Data) == 0 {
				return nil, errInvalidMessage("part %d is a data part without valid JSON \"data\"", i)
			}
			size += len(p.Data)
			msg.Parts = append(msg.Parts, a2a.NewDataPart(v))
		case "file":
			return nil, errUnsupportedContent("part %d is a file; fangd's agents read text and JSON data only", i)
		case "":
			return nil, errInvalidMessage("part %d has no content: give it \"text\"", i)
		default:
			return nil, errInvalidMessage("part %d has unknown kind %q; use text or data", i, kind)
		}
	}
	if size > maxMessageBytes {
		return nil, kernelTooLarge()
	}
	return msg, nil
}

// seedOut renders a protocol message in the seed's shape.
func seedOut(m *a2a.Message) *SeedMessage {
	if m == nil {
		return nil
	}
	out := &SeedMessage{Role: "agent", Parts: []SeedPart{}}
	if m.Role == a2a.MessageRoleUser {
		out.Role = "user"
	}
	for _, p := range m.Parts {
		switch v := p.Content.(type) {
		case a2a.Text:
			s := string(v)
			out.Parts = append(out.Parts, SeedPart{Type: "text", Text: &s})
		case a2a.Data:
			raw, _ := json.Marshal(v.Value)
			out.Parts = append(out.Parts, SeedPart{Type: "data", Data: raw})
		case a2a.URL:
			s := string(v)
			out.Parts = append(out.Parts, SeedPart{Type: "file", Text: &s, MimeType: p.MediaType, Name: p.Filename})
		case a2a.Raw:
			out.Parts = append(out.Parts, SeedPart{Type: "file", MimeType: p.MediaType, Name: p.Filename})
		}
	}
	return out
}

// SeedTask is a task in the seed's shape, with extra fields.
type SeedTask struct {
	TaskID    string       `json:"task_id"`
	Status    string       `json:"status"`
	State     string       `json:"state"`
	AgentID   string       `json:"agent_id"`
	ContextID string       `json:"context_id"`
	Result    *SeedMessage `json:"result"`
	Error     string       `json:"error,omitempty"`
	Usage     *Usage       `json:"usage,omitempty"`
	// History is the conversation of the task, oldest first.
	History   []*SeedMessage `json:"history"`
	CreatedAt time.Time      `json:"created_at"`
	UpdatedAt time.Time      `json:"updated_at"`
}

// Seed renders an inbound task in the seed's shape.
func (s *TaskSnapshot) Seed() SeedTask {
	r := &s.rec
	history := make([]*SeedMessage, 0, len(r.History))
	for _, m := range r.History {
		history = append(history, seedOut(m))
	}
	return SeedTask{
		History:   history,
		TaskID:    r.ID,
		Status:    SeedStatus(r.State),
		State:     string(r.State),
		AgentID:   r.AgentID,
		ContextID: r.ContextID,
		Result:    seedOut(r.result()),
		Error:     errorText(r),
		Usage:     r.Usage,
		CreatedAt: r.CreatedAt,
		UpdatedAt: r.UpdatedAt,
	}
}

func errorText(r *taskRecord) string {
	switch r.State {
	case a2a.TaskStateFailed, a2a.TaskStateRejected, a2a.TaskStateCanceled:
		return r.Reason
	}
	return ""
}

// OutboundStatus is an outbound task as GET /api/a2a/tasks/{id}/status
// shows it: the state and result as the peer reported them.
type OutboundStatus struct {
	TaskID       string         `json:"task_id"`
	Status       string         `json:"status"`
	State        string         `json:"state"`
	AgentID      string         `json:"agent_id"`
	AgentName    string         `json:"agent_name,omitempty"`
	RemoteTaskID string         `json:"remote_task_id,omitempty"`
	ContextID    string         `json:"context_id,omitempty"`
	Result       *SeedMessage   `json:"result"`
	Artifacts    []SeedArtifact `json:"artifacts"`
	Error        string         `json:"error,omitempty"`
	LastError    string         `json:"last_error,omitempty"`
	Attempts     int            `json:"attempts"`
	Streaming    bool           `json:"streaming"`
	CreatedAt    time.Time      `json:"created_at"`
	UpdatedAt    time.Time      `json:"updated_at"`
}

// SeedArtifact is an artifact in the seed's style.
type SeedArtifact struct {
	ID    string     `json:"id"`
	Name  string     `json:"name,omitempty"`
	Parts []SeedPart `json:"parts"`
}

// Outbound renders an outbound task.
func (s *TaskSnapshot) Outbound() OutboundStatus {
	r := &s.rec
	out := OutboundStatus{
		TaskID:       r.ID,
		Status:       SeedStatus(r.State),
		State:        string(r.State),
		AgentID:      r.AgentID,
		AgentName:    r.AgentName,
		RemoteTaskID: r.RemoteTaskID,
		ContextID:    r.RemoteContextID,
		Error:        errorText(r),
		LastError:    r.LastError,
		Attempts:     r.Attempts,
		Streaming:    r.Streaming,
		CreatedAt:    r.CreatedAt,
		UpdatedAt:    r.UpdatedAt,
		Artifacts:    []SeedArtifact{},
	}
	for i := len(r.History) - 1; i >= 0; i-- {
		if r.History[i].Role == a2a.MessageRoleAgent {
			out.Result = seedOut(r.History[i])
			break
		}
	}
	for _, a := range r.Artifacts {
		sm := seedOut(&a2a.Message{Parts: a.Parts})
		out.Artifacts = append(out.Artifacts, SeedArtifact{ID: string(a.ID), Name: a.Name, Parts: sm.Parts})
	}
	if out.Result == nil && len(out.Artifacts) > 0 && r.State == a2a.TaskStateCompleted {
		out.Result = seedOut(r.result())
	}
	return out
}
