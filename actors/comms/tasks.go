package comms

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"unicode"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/uuid"

	"github.com/fangd/fangd/actors/kernel"
)

// Task states.
const (
	TaskRunning   = "running"
	TaskCompleted = "completed"
	TaskFailed    = "failed"
)

// Task is a dispatched task, as stored and served.
type Task struct {
	ID           string   `json:"task_id"`
	Title        string   `json:"title"`
	Description  string   `json:"description"`
	Tags         []string `json:"tags"`
	AssignedTo   string   `json:"assigned_to"`
	AssignedName string   `json:"assigned_name"`
	Reason       string   `json:"reason"`
	Status       string   `json:"status"`
	Result       *string  `json:"result,omitempty"`
	Error        string   `json:"error,omitempty"`
	InputTokens  int      `json:"input_tokens"`
	OutputTokens int      `json:"output_tokens"`
	CostUSD      float64  `json:"cost_usd"`
	CreatedAt    string   `json:"created_at"`
	UpdatedAt    string   `json:"updated_at"`
}

func (r *router) dispatch(c actor.Context, m *DispatchTask) {
	if strings.TrimSpace(m.Title) == "" {
		m.Reply <- TaskOutcome{Err: kernel.Invalid(`"title" must not be empty`)}
		return
	}
	if len(m.Title) > 512 {
		m.Reply <- TaskOutcome{Err: kernel.Invalid(`"title" is longer than 512 characters`)}
		return
	}
	if err := CheckContent("description", m.Title+"\n"+m.Description); err != nil {
		m.Reply <- TaskOutcome{Err: err}
		return
	}
	if len(m.Tags) > 32 {
		m.Reply <- TaskOutcome{Err: kernel.Invalid(`"tags" may hold at most 32 tags`)}
		return
	}
	if r.opts.Agents == nil {
		m.Reply <- TaskOutcome{Err: kernel.Unavailable("no agent runtime is wired into this daemon")}
		return
	}
	agents, bus, tasks, timeout := r.opts.Agents, r.opts.Bus, r.tasks, r.opts.TurnTimeout
	self, system := c.Self(), c.ActorSystem()
	// The whole life of the task runs in one goroutine: it is the only
	// writer of this task's record, so its writes are ordered.
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), kernel.DefaultAskTimeout)
		agent, reason, err := assign(ctx, agents, m)
		cancel()
		if err != nil {
			m.Reply <- TaskOutcome{Err: err}
			return
		}
		t := &Task{ID: "task-" + uuid.NewString(), Title: m.Title, Description: m.Description, Tags: m.Tags,
			AssignedTo: agent.ID, AssignedName: agent.Name, Reason: reason, Status: TaskRunning, CreatedAt: now()}
		if t.Tags == nil {
			t.Tags = []string{}
		}
		t.UpdatedAt = t.CreatedAt
		if err := tasks.Put(t.ID, *t); err != nil {
			m.Reply <- TaskOutcome{Err: err}
			return
		}
		to := "agent:" + agent.ID
		bus.Publish("task.created", "comms", to, map[string]any{"task_id": t.ID, "title": t.Title, "reason": reason})
		bus.PublishRoute("task:"+t.ID, to, "task", map[string]any{"task_id": t.ID})
		created := *t
		m.Reply <- TaskOutcome{Task: &created}

		tctx, tcancel := context.WithTimeout(context.Background(), timeout)
		res, err := agents.Turn(tctx, agent.ID, "task:"+t.ID, taskPrompt(m))
		tcancel()
		t.UpdatedAt = now()
		if err != nil {
			t.Status, t.Error = TaskFailed, err.Error()
		} else {
			t.Status, t.Result = TaskCompleted, &res.Response
			t.InputTokens, t.OutputTokens, t.CostUSD = res.InputTokens, res.OutputTokens, res.CostUSD
		}
		if err := tasks.Put(t.ID, *t); err != nil {
			system.Root.Send(self, &taskDone{task: t})
			return
		}
		if t.Status == TaskCompleted {
			bus.Publish("task.completed", to, "task:"+t.ID, map[string]any{"task_id": t.ID,
				"input_tokens": t.InputTokens, "output_tokens": t.OutputTokens})
		} else {
			bus.Publish("task.failed", to, "task:"+t.ID, map[string]any{"task_id": t.ID, "error": t.Error})
		}
	}()
}

func taskPrompt(m *DispatchTask) string {
	if strings.TrimSpace(m.Description) == "" {
		return "Task: " + m.Title
	}
	return "Task: " + m.Title + "\n\n" + m.Description
}

// assign picks the task's agent: the one named by assign_to, or else the
// one whose tags, name and description share the most words with the
// task. The reason says which and why.
func assign(ctx context.Context, agents Agents, m *DispatchTask) (*Agent, string, error) {
	if m.AssignTo != "" {
		a, err := agents.Resolve(ctx, strings.TrimPrefix(m.AssignTo, "agent:"))
		if err != nil {
			return nil, "", err
		}
		return a, "assigned explicitly (assign_to)", nil
	}
	all, err := agents.List(ctx)
	if err != nil {
		return nil, "", err
	}
	if len(all) == 0 {
		return nil, "", kernel.Errorf(kernel.KindConflict, "no_agents", "there are no agents to assign the task to")
	}
	ranked := rank(all, m)
	best := ranked[0]
	if best.score == 0 {
		if len(all) == 1 {
			return &all[0], "the only agent (nothing in the task matched its tags or description)", nil
		}
		return nil, "", kernel.Errorf(kernel.KindConflict, "no_matching_agent",
			"no agent's tags, name or description match the task; name one with assign_to")
	}
	reason := fmt.Sprintf("best match (score %d): %s", best.score, strings.Join(best.why, "; "))
	if len(ranked) > 1 {
		reason += fmt.Sprintf("; runner-up %s scored %d", ranked[1].agent.Name, ranked[1].score)
	}
	return best.agent, reason, nil
}

type scored struct {
	agent *Agent
	score int
	why   []string
}

// rank scores agents against a task: 3 points per task tag equal to an
// agent tag, 2 per agent tag found among the task's words, 1 per other
// word shared with the agent's name or description. Ties go to the name
// that sorts first, so the choice is stable.
func rank(all []Agent, m *DispatchTask) []scored {
	taskWords := words(m.Title + " " + m.Description)
	taskTags := map[string]bool{}
	for _, t := range m.Tags {
		taskTags[strings.ToLower(strings.TrimSpace(t))] = true
	}
	out := make([]scored, 0, len(all))
	for i := range all {
		a := &all[i]
		s := scored{agent: a}
		var tagHits, tagWords, descHits []string
		seen := map[string]bool{}
		for _, tag := range a.Tags {
			tag = strings.ToLower(tag)
			switch {
			case taskTags[tag]:
				s.score += 3
				tagHits = append(tagHits, tag)
			case taskWords[tag]:
				s.score += 2
				tagWords = append(tagWords, tag)
			}
			seen[tag] = true
		}
		for w := range words(a.Name + " " + a.Description) {
			if taskWords[w] && !seen[w] {
				s.score++
				descHits = append(descHits, w)
			}
		}
		sort.Strings(descHits)
		if len(tagHits) > 0 {
			s.why = append(s.why, "tags "+strings.Join(tagHits, ", "))
		}
		if len(tagWords) > 0 {
			s.why = append(s.why, "tags named in the task "+strings.Join(tagWords, ", "))
		}
		if len(descHits) > 0 {
			s.why = append(s.why, "shared words "+strings.Join(descHits, ", "))
		}
		s.why = append([]string{"agent " + a.Name}, s.why...)
		out = append(out, s)
	}
	slices.SortStableFunc(out, func(x, y scored) int {
		if x.score != y.score {
			return y.score - x.score
		}
		return strings.Compare(x.agent.Name, y.agent.Name)
	})
	return out
}

var stopwords = map[string]bool{"the": true, "and": true, "for": true, "with": true, "this": true, "that": true,
	"from": true, "into": true, "are": true, "you": true, "your": true, "all": true, "any": true, "can": true,
	"please": true, "task": true, "agent": true, "about": true, "what": true, "when": true, "will": true}

// words splits text into lower-case words of 3+ letters or digits.
func words(text string) map[string]bool {
	out := map[string]bool{}
	for _, w := range strings.FieldsFunc(strings.ToLower(text), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r) && r != '-' && r != '_'
	}) {
		if len([]rune(w)) >= 3 && !stopwords[w] {
			out[w] = true
		}
	}
	return out
}
