package a2a

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/a2aproject/a2a-go/v2/a2a"
)

// appendRecord's output decodes to what json.Marshal's does, into the
// record and into plain maps (so no key is renamed, added or dropped),
// for the shapes tasks have and the ones it hands to encoding/json.
func TestAppendRecordDecodesAsJSONMarshal(t *testing.T) {
	now := time.Date(2026, 12, 7, 23, 59, 1, 123456789, time.UTC)
	text := func(s string) *a2a.Part { return a2a.NewTextPart(s) }
	odd := "quote \" backslash \\ <tag> & ampersand \n\t\x01 \u2028 é 😀 invalid \xff end"
	records := map[string]taskRecord{
		"zero":                  {},
		"nil history and parts": {ID: "t", History: nil, Artifacts: []*a2a.Artifact{{ID: "a"}}},
		"quick inbound task": {
			ID: "0193a1b2-0000-7000-8000-000000000001", Direction: Inbound, AgentID: "agent", AgentName: "helper",
			ContextID: "ctx", State: a2a.TaskStateCompleted, Caller: "api_key", CreatedAt: now, UpdatedAt: now.Add(time.Millisecond),
			History: []*a2a.Message{
				{ID: "m1", Role: a2a.MessageRoleUser, TaskID: "t", ContextID: "ctx", Parts: a2a.ContentParts{text("hello")}},
				{ID: "m2", Role: a2a.MessageRoleAgent, TaskID: "t", ContextID: "ctx", Parts: a2a.ContentParts{text("echo: hello")}},
			},
			Artifacts: []*a2a.Artifact{{ID: "response", Name: "response", Parts: a2a.ContentParts{text("echo: hello")}}},
			Usage:     &Usage{Model: "fake/echo", InputTokens: 3, OutputTokens: 5, CostUSD: 0.000123},
		},
		"escapes and empty text": {
			ID: odd, Direction: odd, AgentID: odd, ContextID: odd, State: a2a.TaskStateFailed, Reason: odd, Caller: odd,
			History:   []*a2a.Message{{ID: odd, Role: a2a.MessageRoleUser, Parts: a2a.ContentParts{text(""), text(odd), nil}}, nil},
			Artifacts: []*a2a.Artifact{{ID: a2a.ArtifactID(odd), Description: odd, Name: odd, Parts: a2a.ContentParts{text(odd)}}, nil},
		},
		"shapes left to encoding/json": {
			ID: "t", Direction: Inbound, State: a2a.TaskStateWorking, CreatedAt: now,
			History: []*a2a.Message{
				{ID: "m1", Role: a2a.MessageRoleUser, Metadata: map[string]any{"agent_id": "x", "n": 1.5}, Parts: a2a.ContentParts{text("a")}},
				{ID: "m2", Role: a2a.MessageRoleUser, Extensions: []string{"urn:x"}, ReferenceTasks: []a2a.TaskID{"r"}, Parts: a2a.ContentParts{text("b")}},
				{ID: "m3", Role: a2a.MessageRoleUser, Parts: a2a.ContentParts{
					a2a.NewDataPart(map[string]any{"k": []any{1.0, "two", nil}}),
					{Content: a2a.Text("t"), Filename: "f.txt", MediaType: "text/plain"},
					{Content: a2a.Text("t"), Metadata: map[string]any{"m": true}},
					{Content: a2a.URL("https://example.test/f")},
				}},
				{ID: "m4", Role: a2a.MessageRoleUnspecified},
			},
			Artifacts: []*a2a.Artifact{{ID: "a", Extensions: []string{"urn:y"}, Metadata: map[string]any{"z": "y"}, Parts: a2a.ContentParts{text("c")}}},
		},
		"outbound with push": {
			ID: "t", Direction: Outbound, AgentID: "ext", State: a2a.TaskStateUnspecified, RemoteTaskID: "rt", RemoteContextID: "rc",
			Attempts: 3, LastError: "refused", Streaming: true, CreatedAt: now, UpdatedAt: now,
			Push:  []PushTarget{{ID: "p", URL: "https://example.test/hook", AuthScheme: "Bearer", HasToken: true, Token: "never stored"}},
			Usage: &Usage{CostUSD: 1e-9},
		},
	}
	for name, rec := range records {
		t.Run(name, func(t *testing.T) {
			want, err := json.Marshal(&rec)
			if err != nil {
				t.Fatal(err)
			}
			got, err := appendRecord(nil, &rec)
			if err != nil {
				t.Fatal(err)
			}
			var gotRec, wantRec taskRecord
			if err := json.Unmarshal(got, &gotRec); err != nil {
				t.Fatalf("%v in %s", err, got)
			}
			if err := json.Unmarshal(want, &wantRec); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(gotRec, wantRec) {
				t.Fatalf("decoded differently:\n got %s\nwant %s", got, want)
			}
			var gotAny, wantAny any
			if err := json.Unmarshal(got, &gotAny); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(want, &wantAny); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(gotAny, wantAny) {
				t.Fatalf("different JSON:\n got %s\nwant %s", got, want)
			}
		})
	}
}

// appendTaskAnswer writes the bytes json.Marshal writes for the same
// JSON-RPC answer (the SDK's encoding), for every id type and task shape.
func TestAppendTaskAnswerIsJSONMarshal(t *testing.T) {
	now := time.Date(2026, 12, 8, 0, 1, 2, 30405060, time.UTC)
	odd := "quote \" backslash \\ <tag> & ampersand \n\t\x01 \u2028 é 😀 invalid \xff end"
	text := func(s string) *a2a.Part { return a2a.NewTextPart(s) }
	rec := taskRecord{ID: "t1", Direction: Inbound, ContextID: "c1", State: a2a.TaskStateCompleted, UpdatedAt: now,
		History: []*a2a.Message{
			{ID: "m1", Role: a2a.MessageRoleUser, TaskID: "t1", ContextID: "c1", Parts: a2a.ContentParts{text("hello <b>")}},
			{ID: "m2", Role: a2a.MessageRoleAgent, TaskID: "t1", ContextID: "c1", Parts: a2a.ContentParts{text(odd)}},
		},
		Artifacts: []*a2a.Artifact{{ID: "response", Name: "response", Parts: a2a.ContentParts{text(odd)}}},
	}
	failed := rec.clone()
	failed.State, failed.Reason, failed.Artifacts = a2a.TaskStateFailed, odd, nil
	tasks := map[string]*a2a.Task{
		"completed":    (&TaskSnapshot{rec: rec.clone()}).A2A(nil),
		"no history":   trimHistory((&TaskSnapshot{rec: rec.clone()}).A2A(nil), 0),
		"failed":       (&TaskSnapshot{rec: failed}).A2A(nil),
		"bare":         {ID: "x"},
		"metadata":     {ID: "x", Metadata: map[string]any{"k": "<v>"}, Status: a2a.TaskStatus{State: a2a.TaskStateWorking}},
		"data message": {ID: "x", History: []*a2a.Message{{ID: "d", Role: a2a.MessageRoleUser, Metadata: map[string]any{"a": 1.0}, Parts: a2a.ContentParts{a2a.NewDataPart(map[string]any{"x": "&"})}}}},
	}
	ids := []any{nil, "req-1", "<&>", 1.0, 0.0, -7.0, 12345678901234.0, 1.5, 1e21, 1e-7}
	for name, task := range tasks {
		for _, id := range ids {
			want, err := json.Marshal(rpcResult{JSONRPC: "2.0", ID: id, Result: a2a.StreamResponse{Event: task}})
			if err != nil {
				t.Fatal(err)
			}
			got, err := appendTaskAnswer(nil, id, task)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Errorf("%s, id %v:\n got %s\nwant %s", name, id, got, want)
			}
		}
	}
}

// BenchmarkEncode compares the hand encoders with encoding/json on a
// quick task's final record and its answer.
func BenchmarkEncode(b *testing.B) {
	now := time.Now().UTC()
	rec := taskRecord{ID: newID(), Direction: Inbound, AgentID: testAgent.ID, AgentName: testAgent.Name, ContextID: newID(),
		State: a2a.TaskStateCompleted, Caller: "api_key", CreatedAt: now, UpdatedAt: now,
		History: []*a2a.Message{
			{ID: "bench", Role: a2a.MessageRoleUser, TaskID: "t", ContextID: "c", Parts: a2a.ContentParts{a2a.NewTextPart("bench")}},
			{ID: newID(), Role: a2a.MessageRoleAgent, TaskID: "t", ContextID: "c", Parts: a2a.ContentParts{a2a.NewTextPart("echo: bench")}},
		},
		Artifacts: []*a2a.Artifact{{ID: "response", Name: "response", Parts: a2a.ContentParts{a2a.NewTextPart("echo: bench")}}},
		Usage:     &Usage{Model: "fakebench/instant", InputTokens: 12, OutputTokens: 3, CostUSD: 0.0000015},
	}
	task := (&TaskSnapshot{rec: rec}).A2A(nil)
	for _, c := range []struct {
		name string
		fn   func() ([]byte, error)
	}{
		{"record/json.Marshal", func() ([]byte, error) { return json.Marshal(&rec) }},
		{"record/appendRecord", func() ([]byte, error) { return appendRecord(make([]byte, 0, 1024), &rec) }},
		{"answer/json.Marshal", func() ([]byte, error) {
			return json.Marshal(rpcResult{JSONRPC: "2.0", ID: 1.0, Result: a2a.StreamResponse{Event: task}})
		}},
		{"answer/appendTaskAnswer", func() ([]byte, error) { return appendTaskAnswer(make([]byte, 0, 1024), 1.0, task) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.fn(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
