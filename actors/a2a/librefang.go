package a2a

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/a2aproject/a2a-go/v2/a2a"
)

// LibreFang's client speaks an early A2A draft: JSON-RPC "tasks/send" with
// parts tagged by "type", answered with its own task shape (status as
// {"state"}, "messages", camelCase state names). fangd's JSON-RPC endpoints
// answer it so that a LibreFang daemon that discovered fangd can send to it.

const methodLibreFangSend = "tasks/send"

type lfParams struct {
	ID        string         `json:"id"`
	SessionID string         `json:"sessionId"`
	AgentID   string         `json:"agentId"`
	Message   SeedMessage    `json:"message"`
	Metadata  map[string]any `json:"metadata"`
}

type lfPart struct {
	Type string `json:"type"`
	Text string `json:"text,omitempty"`
	Data any    `json:"data,omitempty"`
}

type lfMessage struct {
	Role  string   `json:"role"`
	Parts []lfPart `json:"parts"`
}

type lfArtifact struct {
	Name      string   `json:"name,omitempty"`
	Index     int      `json:"index"`
	LastChunk bool     `json:"lastChunk"`
	Parts     []lfPart `json:"parts"`
}

type lfStatus struct {
	State   string     `json:"state"`
	Message *lfMessage `json:"message,omitempty"`
}

type lfTask struct {
	ID        string       `json:"id"`
	SessionID string       `json:"sessionId"`
	Status    lfStatus     `json:"status"`
	Messages  []lfMessage  `json:"messages"`
	Artifacts []lfArtifact `json:"artifacts"`
	AgentID   string       `json:"agentId"`
}

// lfState spells a state the way LibreFang does.
func lfState(s a2a.TaskState) string {
	switch s {
	case a2a.TaskStateRejected:
		return "failed" // LibreFang has no "rejected"
	case a2a.TaskStateAuthRequired:
		return "inputRequired"
	}
	return SeedStatus(s)
}

func lfParts(parts a2a.ContentParts) []lfPart {
	out := []lfPart{}
	for _, p := range parts {
		switch v := p.Content.(type) {
		case a2a.Text:
			out = append(out, lfPart{Type: "text", Text: string(v)})
		case a2a.Data:
			out = append(out, lfPart{Type: "data", Data: v.Value})
		}
	}
	return out
}

func (s *TaskSnapshot) libreFang() lfTask {
	r := &s.rec
	t := lfTask{ID: r.ID, SessionID: r.ContextID, AgentID: r.AgentID, Status: lfStatus{State: lfState(r.State)},
		Messages: []lfMessage{}, Artifacts: []lfArtifact{}}
	for _, m := range r.History {
		role := "agent"
		if m.Role == a2a.MessageRoleUser {
			role = "user"
		}
		t.Messages = append(t.Messages, lfMessage{Role: role, Parts: lfParts(m.Parts)})
	}
	if r.Reason != "" && r.State != a2a.TaskStateCompleted {
		t.Status.Message = &lfMessage{Role: "agent", Parts: []lfPart{{Type: "text", Text: "Error: " + r.Reason}}}
	}
	for i, a := range r.Artifacts {
		t.Artifacts = append(t.Artifacts, lfArtifact{Name: a.Name, Index: i, LastChunk: true, Parts: lfParts(a.Parts)})
	}
	return t
}

// serveLibreFangSend answers "tasks/send": it runs the task to its end (or
// SyncWait) like POST /a2a/tasks/send and returns LibreFang's task shape.
func (s *Service) serveLibreFangSend(w http.ResponseWriter, r *http.Request, body []byte, agentID string) {
	var req struct {
		ID     any             `json:"id"`
		Params json.RawMessage `json:"params"`
	}
	_ = json.Unmarshal(body, &req)
	fail := func(kind error, msg string) { writeRPCError(w, req.ID, kind, msg) }
	var p lfParams
	dec := json.NewDecoder(bytes.NewReader(req.Params))
	if len(req.Params) == 0 || dec.Decode(&p) != nil {
		fail(a2a.ErrInvalidParams, "params must be {\"message\": {\"role\": \"user\", \"parts\": [{\"type\": \"text\", \"text\": \"...\"}]}}")
		return
	}
	msg, err := p.Message.ToA2A()
	if err != nil {
		fail(protocolKind(err), errorMessage(err))
		return
	}
	ctx := r.Context()
	sreq := &a2a.SendMessageRequest{Message: msg, Metadata: p.Metadata}
	if p.AgentID != "" {
		sreq.Metadata = map[string]any{"agent_id": p.AgentID}
	}
	agent, err := s.target(ctx, agentID, sreq)
	if err != nil {
		fail(protocolKind(err), errorMessage(err))
		return
	}
	snap, err := s.SendSeed(ctx, agent.ID, msg, p.SessionID)
	if err != nil {
		fail(protocolKind(err), errorMessage(err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"jsonrpc": "2.0", "id": req.ID, "result": snap.libreFang()})
}

// protocolKind is the A2A sentinel toProtocol would pick for err.
func protocolKind(err error) error {
	var ae *a2a.Error
	if errors.As(toProtocol(err), &ae) {
		return ae.Err
	}
	return a2a.ErrInternalError
}

func errorMessage(err error) string { return toProtocol(err).Error() }
