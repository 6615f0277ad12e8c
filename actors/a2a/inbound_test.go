package a2a

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/a2aproject/a2a-go/v2/a2a"

	"github.com/fangd/fangd/actors/kernel"
)

func userMsg(text string) *a2a.Message {
	return a2a.NewMessage(a2a.MessageRoleUser, a2a.NewTextPart(text))
}

func sendReq(text string) *a2a.SendMessageRequest {
	return &a2a.SendMessageRequest{Message: userMsg(text)}
}

func TestSendMessageRunsTheAgentAndStoresTheTask(t *testing.T) {
	h := newHarness(t, nil)
	res, err := h.svc.Handler("").SendMessage(admin(), sendReq("hello"))
	if err != nil {
		t.Fatal(err)
	}
	task, ok := res.(*a2a.Task)
	if !ok {
		t.Fatalf("result is %T, want *a2a.Task", res)
	}
	if task.Status.State != a2a.TaskStateCompleted {
		t.Fatalf("state %s, want completed", task.Status.State)
	}
	if len(task.History) != 2 || task.History[1].Role != a2a.MessageRoleAgent || task.History[1].Parts[0].Text() != "echo: hello" {
		t.Fatalf("history %+v", task.History)
	}
	if len(task.Artifacts) != 1 || task.Artifacts[0].Parts[0].Text() != "echo: hello" {
		t.Fatalf("artifacts %+v", task.Artifacts)
	}
	call := h.agents.lastCall()
	if call.AgentID != testAgent.ID || call.SessionID != "a2a:"+task.ContextID || call.Caller != "api_key" {
		t.Fatalf("turn request %+v", call)
	}
	// The final state is on disk: a restart serves it from the store.
	h.restart()
	got, err := h.svc.Handler("").GetTask(admin(), &a2a.GetTaskRequest{ID: task.ID})
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.State != a2a.TaskStateCompleted || len(got.History) != 2 {
		t.Fatalf("after restart: %+v", got)
	}
}

func TestFollowUpInTheSameContextSharesTheAgentSession(t *testing.T) {
	h := newHarness(t, nil)
	res, err := h.svc.Handler("").SendMessage(admin(), sendReq("one"))
	if err != nil {
		t.Fatal(err)
	}
	first := res.(*a2a.Task)
	m := userMsg("two")
	m.ContextID = first.ContextID
	res, err = h.svc.Handler("").SendMessage(admin(), &a2a.SendMessageRequest{Message: m})
	if err != nil {
		t.Fatal(err)
	}
	second := res.(*a2a.Task)
	if second.ID == first.ID || second.ContextID != first.ContextID {
		t.Fatalf("second task %s in context %s", second.ID, second.ContextID)
	}
	if h.agents.lastCall().SessionID != "a2a:"+first.ContextID {
		t.Fatalf("session %q", h.agents.lastCall().SessionID)
	}
	// A message to the finished task itself is refused with the spec's error.
	m = userMsg("three")
	m.TaskID = first.ID
	_, err = h.svc.Handler("").SendMessage(admin(), &a2a.SendMessageRequest{Message: m})
	if !errors.Is(err, a2a.ErrUnsupportedOperation) {
		t.Fatalf("message to a finished task: %v, want UnsupportedOperation", err)
	}
}

func TestStreamingEmitsTaskArtifactAndFinalStatus(t *testing.T) {
	h := newHarness(t, nil)
	var events []a2a.Event
	for ev, err := range h.svc.Handler("").SendStreamingMessage(admin(), sendReq("stream me")) {
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, ev)
	}
	if len(events) != 3 {
		t.Fatalf("got %d events: %#v", len(events), events)
	}
	first, ok := events[0].(*a2a.Task)
	if !ok || first.Status.State != a2a.TaskStateWorking {
		t.Fatalf("first event %#v, want the working task", events[0])
	}
	art, ok := events[1].(*a2a.TaskArtifactUpdateEvent)
	if !ok || art.Artifact.Parts[0].Text() != "echo: stream me" || art.TaskID != first.ID {
		t.Fatalf("second event %#v, want the artifact", events[1])
	}
	st, ok := events[2].(*a2a.TaskStatusUpdateEvent)
	if !ok || st.Status.State != a2a.TaskStateCompleted || st.Status.Message == nil {
		t.Fatalf("last event %#v, want completed status", events[2])
	}
}

func TestCancelStopsTheRunningTurn(t *testing.T) {
	h := newHarness(t, nil)
	started := make(chan struct{})
	h.agents.setTurn(func(ctx context.Context, req TurnRequest) (TurnResult, error) {
		close(started)
		<-ctx.Done() // a provider call that only ends when cancelled
		return TurnResult{}, ctx.Err()
	})
	res, err := h.svc.Handler("").SendMessage(admin(), &a2a.SendMessageRequest{Message: userMsg("slow"),
		Config: &a2a.SendMessageConfig{ReturnImmediately: true}})
	if err != nil {
		t.Fatal(err)
	}
	task := res.(*a2a.Task)
	if task.Status.State != a2a.TaskStateWorking {
		t.Fatalf("returnImmediately answered %s, want working", task.Status.State)
	}
	<-started
	canceled, err := h.svc.Handler("").CancelTask(admin(), &a2a.CancelTaskRequest{ID: task.ID})
	if err != nil {
		t.Fatal(err)
	}
	if canceled.Status.State != a2a.TaskStateCanceled {
		t.Fatalf("state %s after cancel", canceled.Status.State)
	}
	// The turn's context was cancelled (not timed out): the work stopped.
	select {
	case cause := <-h.agents.ended:
		if !errors.Is(cause, context.Canceled) {
			t.Fatalf("turn ended with %v, want context.Canceled", cause)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the turn kept running after cancel")
	}
	// Cancelling again is harmless; the state stays canceled.
	again, err := h.svc.Handler("").CancelTask(admin(), &a2a.CancelTaskRequest{ID: task.ID})
	if err != nil || again.Status.State != a2a.TaskStateCanceled {
		t.Fatalf("second cancel: %v %v", again, err)
	}
	got, _ := h.svc.Handler("").GetTask(admin(), &a2a.GetTaskRequest{ID: task.ID})
	if got.Status.State != a2a.TaskStateCanceled {
		t.Fatalf("stored state %s", got.Status.State)
	}
}

func TestCancelOfACompletedTaskIsNotCancelable(t *testing.T) {
	h := newHarness(t, nil)
	res, err := h.svc.Handler("").SendMessage(admin(), sendReq("quick"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.svc.Handler("").CancelTask(admin(), &a2a.CancelTaskRequest{ID: res.(*a2a.Task).ID})
	if !errors.Is(err, a2a.ErrTaskNotCancelable) {
		t.Fatalf("cancel of completed task: %v, want TaskNotCancelable", err)
	}
	_, err = h.svc.Handler("").CancelTask(admin(), &a2a.CancelTaskRequest{ID: "no-such-task"})
	if !errors.Is(err, a2a.ErrTaskNotFound) {
		t.Fatalf("cancel of unknown task: %v, want TaskNotFound", err)
	}
	// The seed route sees the same as a 409.
	_, err = h.svc.CancelInbound(admin(), string(res.(*a2a.Task).ID))
	if de := kernel.AsError(err); de == nil || de.Kind != kernel.KindConflict || de.Code != "task_not_cancelable" {
		t.Fatalf("seed cancel of completed task: %v", err)
	}
}

func TestTurnErrorsBecomeFailedOrRejected(t *testing.T) {
	h := newHarness(t, nil)
	h.agents.setTurn(func(context.Context, TurnRequest) (TurnResult, error) {
		return TurnResult{}, kernel.Errorf(kernel.KindPaymentRequired, "budget_exceeded", "daily budget exceeded")
	})
	res, err := h.svc.Handler("").SendMessage(admin(), sendReq("x"))
	if err != nil {
		t.Fatal(err)
	}
	task := res.(*a2a.Task)
	if task.Status.State != a2a.TaskStateRejected || task.Status.Message.Parts[0].Text() != "daily budget exceeded" {
		t.Fatalf("budget refusal: %s %+v", task.Status.State, task.Status.Message)
	}
	h.agents.setTurn(func(context.Context, TurnRequest) (TurnResult, error) {
		return TurnResult{}, errors.New("dial tcp 10.1.2.3:443: secret internal detail")
	})
	res, err = h.svc.Handler("").SendMessage(admin(), sendReq("y"))
	if err != nil {
		t.Fatal(err)
	}
	task = res.(*a2a.Task)
	if task.Status.State != a2a.TaskStateFailed || strings.Contains(task.Status.Message.Parts[0].Text(), "secret") {
		t.Fatalf("internal failure leaked or wrong state: %s %+v", task.Status.State, task.Status.Message)
	}
}

func TestRestartFailsInterruptedTasksOrResumesThem(t *testing.T) {
	for _, resume := range []bool{false, true} {
		t.Run(map[bool]string{false: "fail", true: "resume"}[resume], func(t *testing.T) {
			h := newHarness(t, func(o *Options) { o.ResumeOnRestart = resume })
			started := make(chan struct{}, 1)
			h.agents.setTurn(func(ctx context.Context, req TurnRequest) (TurnResult, error) {
				started <- struct{}{}
				<-ctx.Done()
				return TurnResult{}, ctx.Err()
			})
			res, err := h.svc.Handler("").SendMessage(admin(), &a2a.SendMessageRequest{Message: userMsg("long"),
				Config: &a2a.SendMessageConfig{ReturnImmediately: true}})
			if err != nil {
				t.Fatal(err)
			}
			id := res.(*a2a.Task).ID
			<-started
			h.agents.setTurn(nil) // after the restart, turns answer at once
			h.restart()
			var got *a2a.Task
			eventually(t, "the interrupted task to settle", func() bool {
				got, err = h.svc.Handler("").GetTask(admin(), &a2a.GetTaskRequest{ID: id})
				return err == nil && got.Status.State.Terminal()
			})
			if !resume {
				if got.Status.State != a2a.TaskStateFailed || !strings.Contains(got.Status.Message.Parts[0].Text(), "restarted") {
					t.Fatalf("interrupted task: %s %+v", got.Status.State, got.Status.Message)
				}
				return
			}
			if got.Status.State != a2a.TaskStateCompleted || got.History[len(got.History)-1].Parts[0].Text() != "echo: long" {
				t.Fatalf("resumed task: %s %+v", got.Status.State, got.History)
			}
		})
	}
}

func TestRetentionSweepsFinishedTasks(t *testing.T) {
	h := newHarness(t, func(o *Options) {
		o.Retention = 50 * time.Millisecond
		o.SweepInterval = 20 * time.Millisecond
	})
	res, err := h.svc.Handler("").SendMessage(admin(), sendReq("short-lived"))
	if err != nil {
		t.Fatal(err)
	}
	id := res.(*a2a.Task).ID
	eventually(t, "the finished task to be swept", func() bool {
		_, err := h.svc.Handler("").GetTask(admin(), &a2a.GetTaskRequest{ID: id})
		return errors.Is(err, a2a.ErrTaskNotFound)
	})
}

func TestScopesHideOtherCallersAndAgents(t *testing.T) {
	h := newHarness(t, nil)
	h.agents.agents = append(h.agents.agents, otherAgent)
	res, err := h.svc.Handler(testAgent.ID).SendMessage(peer("alice"), sendReq("mine"))
	if err != nil {
		t.Fatal(err)
	}
	id := res.(*a2a.Task).ID
	if _, err := h.svc.Handler(testAgent.ID).GetTask(peer("alice"), &a2a.GetTaskRequest{ID: id}); err != nil {
		t.Fatalf("owner cannot read its task: %v", err)
	}
	if _, err := h.svc.Handler(testAgent.ID).GetTask(peer("bob"), &a2a.GetTaskRequest{ID: id}); !errors.Is(err, a2a.ErrTaskNotFound) {
		t.Fatalf("another peer read the task: %v", err)
	}
	if _, err := h.svc.Handler(otherAgent.ID).GetTask(admin(), &a2a.GetTaskRequest{ID: id}); !errors.Is(err, a2a.ErrTaskNotFound) {
		t.Fatalf("another agent's endpoint read the task: %v", err)
	}
	if _, err := h.svc.Handler("").CancelTask(peer("bob"), &a2a.CancelTaskRequest{ID: id}); !errors.Is(err, a2a.ErrTaskNotFound) {
		t.Fatalf("another peer cancelled the task: %v", err)
	}
	list, err := h.svc.Handler("").ListTasks(peer("bob"), &a2a.ListTasksRequest{})
	if err != nil || len(list.Tasks) != 0 {
		t.Fatalf("bob lists %v %v", list, err)
	}
	list, err = h.svc.Handler("").ListTasks(admin(), &a2a.ListTasksRequest{})
	if err != nil || len(list.Tasks) != 1 || list.Tasks[0].ID != id {
		t.Fatalf("admin lists %+v %v", list, err)
	}
}

func TestTargetSelection(t *testing.T) {
	h := newHarness(t, nil)
	h.agents.agents = append(h.agents.agents, otherAgent)
	_, err := h.svc.Handler("").SendMessage(admin(), sendReq("who?"))
	if !errors.Is(err, a2a.ErrInvalidParams) || !strings.Contains(err.Error(), "serves 2 agents") {
		t.Fatalf("ambiguous target: %v", err)
	}
	req := sendReq("for other")
	req.Metadata = map[string]any{"agent_id": "other"}
	if _, err := h.svc.Handler("").SendMessage(admin(), req); err != nil {
		t.Fatal(err)
	}
	if h.agents.lastCall().AgentID != otherAgent.ID {
		t.Fatalf("metadata agent_id went to %s", h.agents.lastCall().AgentID)
	}
	req = sendReq("tenant")
	req.Tenant = testAgent.ID
	if _, err := h.svc.Handler("").SendMessage(admin(), req); err != nil {
		t.Fatal(err)
	}
	if h.agents.lastCall().AgentID != testAgent.ID {
		t.Fatalf("tenant went to %s", h.agents.lastCall().AgentID)
	}
	req = sendReq("nobody")
	req.Metadata = map[string]any{"agent_id": "ghost"}
	if _, err := h.svc.Handler("").SendMessage(admin(), req); !errors.Is(err, a2a.ErrInvalidParams) {
		t.Fatalf("unknown agent: %v", err)
	}
}

func TestBadMessagesAreRefusedWithTheSpecErrors(t *testing.T) {
	h := newHarness(t, nil)
	cases := []struct {
		name string
		req  *a2a.SendMessageRequest
		want error
	}{
		{"no message", &a2a.SendMessageRequest{}, a2a.ErrInvalidParams},
		{"no parts", &a2a.SendMessageRequest{Message: &a2a.Message{ID: "m", Role: a2a.MessageRoleUser}}, a2a.ErrInvalidParams},
		{"agent role", &a2a.SendMessageRequest{Message: a2a.NewMessage(a2a.MessageRoleAgent, a2a.NewTextPart("x"))}, a2a.ErrInvalidParams},
		{"file part", &a2a.SendMessageRequest{Message: a2a.NewMessage(a2a.MessageRoleUser, a2a.NewFileURLPart("https://x/y.pdf", "application/pdf"))}, a2a.ErrUnsupportedContentType},
		{"output modes", &a2a.SendMessageRequest{Message: userMsg("x"), Config: &a2a.SendMessageConfig{AcceptedOutputModes: []string{"image/png"}}}, a2a.ErrUnsupportedContentType},
		{"too large", sendReq(strings.Repeat("x", maxMessageBytes+1)), a2a.ErrInvalidParams},
		{"push unsupported", &a2a.SendMessageRequest{Message: userMsg("x"), Config: &a2a.SendMessageConfig{PushConfig: &a2a.PushConfig{URL: "http://127.0.0.1:1/hook"}}}, a2a.ErrPushNotificationNotSupported},
	}
	for _, c := range cases {
		if _, err := h.svc.Handler("").SendMessage(admin(), c.req); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	list, _ := h.svc.Handler("").ListTasks(admin(), &a2a.ListTasksRequest{})
	if len(list.Tasks) != 0 {
		t.Fatalf("refused requests created %d tasks", len(list.Tasks))
	}
}

func TestPushNotificationsGoThroughThePusher(t *testing.T) {
	pusher := newFakePusher()
	h := newHarness(t, func(o *Options) { o.Pusher = pusher })
	req := &a2a.SendMessageRequest{Message: userMsg("notify me"), Config: &a2a.SendMessageConfig{
		PushConfig: &a2a.PushConfig{ID: "cfg1", URL: "http://127.0.0.1:9/hook", Token: "tok-123",
			Auth: &a2a.PushAuthInfo{Scheme: "Bearer", Credentials: "secret-cred"}}}}
	res, err := h.svc.Handler("").SendMessage(admin(), req)
	if err != nil {
		t.Fatal(err)
	}
	task := res.(*a2a.Task)
	var got []PushDelivery
	eventually(t, "the final push", func() bool {
		pusher.mu.Lock()
		defer pusher.mu.Unlock()
		got = append([]PushDelivery(nil), pusher.got...)
		return len(got) >= 2
	})
	ids := map[string]bool{}
	for _, d := range got {
		if d.URL != "http://127.0.0.1:9/hook" || d.Headers["A2A-Notification-Token"] != "tok-123" || d.Headers["Authorization"] != "Bearer secret-cred" {
			t.Fatalf("delivery %+v", d)
		}
		if ids[d.ID] {
			t.Fatalf("duplicate delivery id %s", d.ID)
		}
		ids[d.ID] = true
	}
	var last a2a.StreamResponse
	if err := json.Unmarshal(got[len(got)-1].Body, &last); err != nil {
		t.Fatal(err)
	}
	st, ok := last.Event.(*a2a.TaskStatusUpdateEvent)
	if !ok || st.Status.State != a2a.TaskStateCompleted || st.TaskID != task.ID {
		t.Fatalf("last push %#v", last.Event)
	}
	// The config is listed without its secrets.
	cfgs, err := h.svc.Handler("").ListTaskPushConfigs(admin(), &a2a.ListTaskPushConfigRequest{TaskID: task.ID})
	if err != nil || len(cfgs.Configs) != 1 {
		t.Fatalf("configs %+v %v", cfgs, err)
	}
	raw, _ := json.Marshal(cfgs)
	if strings.Contains(string(raw), "tok-123") || strings.Contains(string(raw), "secret-cred") {
		t.Fatalf("secrets leaked in %s", raw)
	}
	// Deleting the config releases the engine's endpoint for it.
	if err := h.svc.Handler("").DeleteTaskPushConfig(admin(), &a2a.DeleteTaskPushConfigRequest{TaskID: task.ID, ID: "cfg1"}); err != nil {
		t.Fatal(err)
	}
	pusher.mu.Lock()
	forgot := append([]string(nil), pusher.forgot...)
	pusher.mu.Unlock()
	if len(forgot) != 1 || forgot[0] != got[0].Endpoint {
		t.Fatalf("forgot %v, deliveries went to %s", forgot, got[0].Endpoint)
	}
	if _, err := h.svc.Handler("").GetTaskPushConfig(admin(), &a2a.GetTaskPushConfigRequest{TaskID: task.ID, ID: "cfg1"}); err == nil {
		t.Fatal("deleted config still there")
	}
	// A push URL the SSRF policy refuses is an error, not a config.
	_, err = h.svc.Handler("").SendMessage(admin(), &a2a.SendMessageRequest{Message: userMsg("x"),
		Config: &a2a.SendMessageConfig{PushConfig: &a2a.PushConfig{URL: "http://10.0.0.1/hook"}}})
	if !errors.Is(err, a2a.ErrInvalidParams) {
		t.Fatalf("blocked push url: %v", err)
	}
}

func TestSubscribeToARunningTask(t *testing.T) {
	h := newHarness(t, nil)
	release := make(chan struct{})
	h.agents.setTurn(func(ctx context.Context, req TurnRequest) (TurnResult, error) {
		<-release
		return TurnResult{Text: "done"}, nil
	})
	res, err := h.svc.Handler("").SendMessage(admin(), &a2a.SendMessageRequest{Message: userMsg("x"),
		Config: &a2a.SendMessageConfig{ReturnImmediately: true}})
	if err != nil {
		t.Fatal(err)
	}
	id := res.(*a2a.Task).ID
	var events []a2a.Event
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev, err := range h.svc.Handler("").SubscribeToTask(admin(), &a2a.SubscribeToTaskRequest{ID: id}) {
			if err != nil {
				t.Error(err)
				return
			}
			events = append(events, ev)
			if len(events) == 1 {
				close(release)
			}
		}
	}()
	<-done
	if len(events) != 3 {
		t.Fatalf("events %#v", events)
	}
	if st := events[2].(*a2a.TaskStatusUpdateEvent); st.Status.State != a2a.TaskStateCompleted {
		t.Fatalf("last %#v", st)
	}
	// A finished task has nothing to subscribe to.
	for _, err := range h.svc.Handler("").SubscribeToTask(admin(), &a2a.SubscribeToTaskRequest{ID: id}) {
		if !errors.Is(err, a2a.ErrUnsupportedOperation) {
			t.Fatalf("subscribe to finished task: %v", err)
		}
	}
}

func TestListTasksPagesNewestFirst(t *testing.T) {
	h := newHarness(t, nil)
	var ids []a2a.TaskID
	for i := 0; i < 5; i++ {
		res, err := h.svc.Handler("").SendMessage(admin(), sendReq("n"))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.(*a2a.Task).ID)
	}
	page, err := h.svc.Handler("").ListTasks(admin(), &a2a.ListTasksRequest{PageSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	if page.TotalSize != 5 || len(page.Tasks) != 2 || page.Tasks[0].ID != ids[4] || page.Tasks[1].ID != ids[3] || page.NextPageToken == "" {
		t.Fatalf("first page %+v", page)
	}
	var seen []a2a.TaskID
	for _, tk := range page.Tasks {
		seen = append(seen, tk.ID)
	}
	for page.NextPageToken != "" {
		page, err = h.svc.Handler("").ListTasks(admin(), &a2a.ListTasksRequest{PageSize: 2, PageToken: page.NextPageToken})
		if err != nil {
			t.Fatal(err)
		}
		for _, tk := range page.Tasks {
			seen = append(seen, tk.ID)
		}
	}
	if len(seen) != 5 || seen[4] != ids[0] {
		t.Fatalf("pages gave %v, want %v reversed", seen, ids)
	}
	if _, err := h.svc.Handler("").ListTasks(admin(), &a2a.ListTasksRequest{PageSize: 101}); !errors.Is(err, a2a.ErrInvalidParams) {
		t.Fatalf("pageSize 101: %v", err)
	}
}
