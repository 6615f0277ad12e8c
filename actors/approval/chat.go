package approval

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/kernel"
)

// ChatMessage is an inbound chat message that may be a command.
type ChatMessage struct {
	Channel  string // the configured channel's name
	ChatID   string
	UserID   string
	UserName string
	Text     string
}

// IsCommand reports whether text is an /approve or /reject command (cheap:
// channels call it on every inbound message).
func IsCommand(text string) bool {
	_, _, _, ok := parseCommand(text)
	return ok
}

// parseCommand reads "/approve <id> [code]" and "/reject <id> [reason]".
// Telegram's "/approve@botname" form is accepted.
func parseCommand(text string) (verb, id, rest string, ok bool) {
	t := strings.TrimSpace(text)
	if !strings.HasPrefix(t, "/") {
		return "", "", "", false
	}
	fields := strings.Fields(t)
	head, _, _ := strings.Cut(strings.ToLower(fields[0]), "@")
	switch head {
	case "/approve", "/reject":
	default:
		return "", "", "", false
	}
	verb = head[1:]
	if len(fields) > 1 {
		id = fields[1]
	}
	if len(fields) > 2 {
		// The reason keeps its own spacing: it is the text after the
		// second word (found by position: the id's bytes may also occur
		// inside "/approve", as "a" does).
		after := t
		for range 2 {
			after = strings.TrimLeftFunc(after, unicode.IsSpace)
			after = after[strings.IndexFunc(after, unicode.IsSpace):]
		}
		rest = strings.TrimSpace(after)
	}
	return verb, id, rest, true
}

// HandleChat decides a request from a chat command. handled is false when
// the text is not a command (route it to the agent as usual); otherwise
// reply is what to answer in the same chat. Only users on the channel's
// approver list (a [[approval.notify]] target of that channel) may decide;
// every attempt is audited.
func (a *Approvals) HandleChat(ctx context.Context, m ChatMessage) (reply string, handled bool) {
	verb, prefix, rest, ok := parseCommand(m.Text)
	if !ok {
		return "", false
	}
	who := m.Channel + ":" + m.UserID
	if m.UserName != "" {
		who = m.Channel + ":@" + strings.TrimPrefix(m.UserName, "@")
	}
	if !a.env.policy.Load().ChatApprover(m.Channel, m.UserID, m.UserName) {
		_ = a.env.appendAudit(audit.Event{EventType: "approval_decision_refused", Outcome: "denied", Actor: who,
			Details: fmt.Sprintf("attempt=%s via=channel chat=%s reason=not_an_approver id=%s", verb, m.ChatID, truncate(prefix, 40))})
		return fmt.Sprintf("⛔ %s is not on the approver list of %s; the request is unchanged.", displayName(m), m.Channel), true
	}
	if prefix == "" {
		return "Usage: /approve <id> [code] or /reject <id> [reason]", true
	}
	id, err := kernel.Ask[string](ctx, a.env.k, a.pid, &Resolve{Prefix: prefix})
	if err != nil {
		return "⚠️ " + errText(err), true
	}
	d := Decide{ID: id, Approve: verb == "approve", By: Decider{Identity: who, Via: ViaChannel,
		chat: NotifyTarget{Channel: m.Channel, ChatID: m.ChatID}}}
	if d.Approve {
		d.Code = rest
	} else {
		d.Reason = truncate(rest, MaxReason)
	}
	rec, err := a.Decide(ctx, d)
	if err != nil {
		return "⚠️ " + errText(err), true
	}
	return decisionNotice(rec), true
}

func displayName(m ChatMessage) string {
	if m.UserName != "" {
		return "@" + strings.TrimPrefix(m.UserName, "@")
	}
	return m.UserID
}

func errText(err error) string {
	if de := kernel.AsError(err); de != nil {
		return de.Msg
	}
	return "the decision could not be recorded; try again"
}

func short(id string) string {
	if len(id) > minPrefix {
		return id[:minPrefix]
	}
	return id
}

// requestNotice is posted to the notify targets when a request is made.
func requestNotice(rec *Approval) string {
	var b strings.Builder
	fmt.Fprintf(&b, "🔐 Approval needed — %s risk\n", rec.RiskLevel)
	if rec.AgentName != "" {
		fmt.Fprintf(&b, "Agent: %s\n", rec.AgentName)
	}
	fmt.Fprintf(&b, "Action: %s\n", rec.Action)
	if rec.Description != "" {
		fmt.Fprintf(&b, "%s\n", truncate(rec.Description, 500))
	} else if rec.ActionSummary != "" {
		fmt.Fprintf(&b, "%s\n", truncate(rec.ActionSummary, 500))
	}
	fmt.Fprintf(&b, "ID: %s\n", rec.ID)
	code := ""
	if rec.SecondFactorRequired {
		code = " <totp code>"
	}
	fmt.Fprintf(&b, "Reply /approve %s%s or /reject %s [reason] before %s.", short(rec.ID), code, short(rec.ID), rec.ExpiresAt.UTC().Format("15:04:05 UTC"))
	return b.String()
}

// decisionNotice announces a decision (to the notify targets, and as the
// answer to a chat command).
func decisionNotice(rec *Approval) string {
	who := rec.DecidedBy
	switch rec.Status {
	case StatusApproved:
		if rec.DecidedVia == ViaTimeout {
			return fmt.Sprintf("✅ Approval %s (%s) was approved automatically: low risk and no decision in time.", short(rec.ID), rec.Action)
		}
		f := ""
		if rec.SecondFactor != FactorNone && rec.SecondFactor != "" {
			f = " with " + strings.ReplaceAll(rec.SecondFactor, "_", " ")
		}
		return fmt.Sprintf("✅ Approval %s (%s) approved by %s%s.", short(rec.ID), rec.Action, who, f)
	case StatusRejected:
		r := ""
		if rec.Reason != "" {
			r = ": " + truncate(rec.Reason, 200)
		}
		return fmt.Sprintf("❌ Approval %s (%s) rejected by %s%s.", short(rec.ID), rec.Action, who, r)
	case StatusModified:
		return fmt.Sprintf("✏️ Approval %s (%s) sent back for changes by %s: %s.", short(rec.ID), rec.Action, who, truncate(rec.Reason, 200))
	case StatusExpired:
		return fmt.Sprintf("⌛ Approval %s (%s) expired without a decision; the action was not run.", short(rec.ID), rec.Action)
	case StatusCancelled:
		return fmt.Sprintf("🚫 Approval %s (%s) was withdrawn: %s.", short(rec.ID), rec.Action, rec.Reason)
	}
	return fmt.Sprintf("Approval %s is %s.", short(rec.ID), rec.Status)
}

func escalationNotice(rec *Approval) string {
	return fmt.Sprintf("⏰ Still waiting (escalation %d): approval %s (%s, %s risk) now expires at %s. Reply /approve %s or /reject %s.",
		rec.Escalations, short(rec.ID), rec.Action, rec.RiskLevel, rec.ExpiresAt.UTC().Format(time.RFC3339), short(rec.ID), short(rec.ID))
}
