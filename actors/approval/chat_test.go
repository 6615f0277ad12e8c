package approval

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/fangd/fangd/actors/approval/approvaltest"
	"github.com/fangd/fangd/actors/kernel/kerneltest"
)

func TestParseCommand(t *testing.T) {
	for _, c := range []struct {
		text, verb, id, rest string
		ok                   bool
	}{
		{"/approve 1a2b3c4d", "approve", "1a2b3c4d", "", true},
		{"  /approve@fangd_bot 1a2b3c4d 123456 ", "approve", "1a2b3c4d", "123456", true},
		{"/reject 1a2b3c4d too risky,  really", "reject", "1a2b3c4d", "too risky,  really", true},
		{"/REJECT", "reject", "", "", true},
		// The id's bytes also occur in the command word: the code is still the third word.
		{"/approve a 123456", "approve", "a", "123456", true},
		{"/reject ec not  now", "reject", "ec", "not  now", true},
		{"/approved 1a2b", "", "", "", false},
		{"please /approve 1a2b", "", "", "", false},
		{"hello", "", "", "", false},
	} {
		verb, id, rest, ok := parseCommand(c.text)
		if verb != c.verb || id != c.id || rest != c.rest || ok != c.ok {
			t.Fatalf("%q: %q %q %q %v", c.text, verb, id, rest, ok)
		}
	}
}

func TestDecideFromChat(t *testing.T) {
	c := kerneltest.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	h := newHarness(t, policy(func(p *Policy) {
		p.SecondFactor = SecondFactorTOTP
		p.TOTPTools = []string{"shell_*"}
		p.Notify = []NotifyTarget{
			{Channel: "tg", ChatID: "-100", Approvers: []string{"@alice", "4242"}},
			{Channel: "irc", ChatID: "#ops", Approvers: []string{"carol"}},
		}
	}), c)
	ctx := t.Context()
	id := uuid.NewString()
	wait := h.gate(Request{ID: id, AgentID: "a1", AgentName: "ops", Action: "file_write", Description: "write /etc/motd"})
	waitFor(t, "the request notices", func() bool { return len(h.posts.all()) == 2 })
	for _, p := range h.posts.all() {
		if !strings.Contains(p, id) || !strings.Contains(p, "/approve "+id[:8]) || !strings.Contains(p, "write /etc/motd") || !strings.Contains(p, "high risk") {
			t.Fatalf("notice %q", p)
		}
	}
	// Not a command: not handled (the channel routes it to the agent).
	if _, handled := h.a.HandleChat(ctx, ChatMessage{Channel: "tg", ChatID: "-100", UserName: "alice", Text: "hi"}); handled {
		t.Fatal("plain text handled")
	}
	// Someone not on the list is refused, and nothing changes.
	reply, handled := h.a.HandleChat(ctx, ChatMessage{Channel: "tg", ChatID: "-100", UserID: "1", UserName: "mallory", Text: "/approve " + id[:8]})
	if !handled || !strings.Contains(reply, "not on the approver list") {
		t.Fatalf("%v %q", handled, reply)
	}
	// An approver of another channel does not count here.
	if reply, _ := h.a.HandleChat(ctx, ChatMessage{Channel: "tg", ChatID: "-100", UserName: "carol", Text: "/approve " + id}); !strings.Contains(reply, "not on the approver list") {
		t.Fatalf("%q", reply)
	}
	if rec, _ := h.a.Get(context.Background(), id); rec.Status != StatusPending {
		t.Fatal("a refused chat command decided")
	}
	// Too short an id prefix.
	if reply, _ := h.a.HandleChat(ctx, ChatMessage{Channel: "tg", ChatID: "-100", UserName: "alice", Text: "/approve " + id[:4]}); !strings.Contains(reply, "first 8 characters") {
		t.Fatalf("%q", reply)
	}
	// An approver (matched by id) approves with the short id.
	reply, handled = h.a.HandleChat(ctx, ChatMessage{Channel: "tg", ChatID: "-100", UserID: "4242", UserName: "bob", Text: "/approve@fangd_bot " + id[:8]})
	if !handled || !strings.Contains(reply, "approved by tg:@bob") {
		t.Fatalf("%q", reply)
	}
	rec := recv(t, wait)
	if rec.Status != StatusApproved || rec.DecidedVia != ViaChannel || rec.DecidedBy != "tg:@bob" {
		t.Fatalf("%+v", rec)
	}
	// The decision is announced to the other notify target, not echoed
	// into the chat it came from (which got the reply above).
	waitFor(t, "the announcement", func() bool { return len(h.posts.all()) == 3 })
	if last := h.posts.all()[2]; !strings.HasPrefix(last, "irc/#ops: ✅") {
		t.Fatalf("announcement %q", last)
	}
	// Deciding again from chat says why not.
	if reply, _ := h.a.HandleChat(ctx, ChatMessage{Channel: "irc", ChatID: "#ops", UserName: "carol", Text: "/reject " + id}); !strings.Contains(reply, "already approved") {
		t.Fatalf("%q", reply)
	}

	// TOTP-gated actions take the code after the id.
	secret, _ := enrol(t, h)
	id2 := uuid.NewString()
	wait2 := h.gate(Request{ID: id2, AgentID: "a1", Action: "shell_exec"})
	waitFor(t, "the request", func() bool { _, err := h.a.Get(context.Background(), id2); return err == nil })
	if reply, _ := h.a.HandleChat(ctx, ChatMessage{Channel: "irc", ChatID: "#ops", UserName: "carol", Text: "/approve " + id2}); !strings.Contains(reply, "TOTP code is required") {
		t.Fatalf("%q", reply)
	}
	reply, _ = h.a.HandleChat(ctx, ChatMessage{Channel: "irc", ChatID: "#ops", UserName: "Carol", Text: "/approve " + id2 + " " + approvaltest.TOTP(t, secret, c.Now())})
	if !strings.Contains(reply, "approved by irc:@Carol with totp") {
		t.Fatalf("%q", reply)
	}
	recv(t, wait2)
	// Reject with a reason.
	id3 := uuid.NewString()
	wait3 := h.gate(Request{ID: id3, AgentID: "a1", Action: "shell_exec"})
	waitFor(t, "the request", func() bool { _, err := h.a.Get(context.Background(), id3); return err == nil })
	reply, _ = h.a.HandleChat(ctx, ChatMessage{Channel: "tg", ChatID: "555", UserName: "alice", Text: "/reject " + id3[:10] + " not today"})
	if !strings.Contains(reply, "rejected by tg:@alice: not today") {
		t.Fatalf("%q", reply)
	}
	if rec := recv(t, wait3); rec.Reason != "not today" {
		t.Fatalf("%+v", rec)
	}
	waitFor(t, "audited chat refusal", func() bool {
		for _, e := range h.auditEntries() {
			if e.EventType == "approval_decision_refused" && e.Actor == "tg:@mallory" && e.Outcome == "denied" {
				return true
			}
		}
		return false
	})
}
