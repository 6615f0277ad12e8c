package webhook

import (
	"context"
	"testing"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/kernel/kerneltest"
)

// A2A push endpoints: fed by Push (not the bus), the body sent as given,
// signed with the given secret, with the given headers, retried, in order,
// not listed with the /api/webhooks kinds, and deleted on request.
func TestPushEndpointsSendExactlyWhatIsPushed(t *testing.T) {
	e := start(t, t.TempDir(), Options{})
	r := newReceiver(t, "client-token-1234")
	r.setScript(500) // the first attempt fails: the engine retries
	var id string
	var err error
	kerneltest.WaitFor(t, "condition", func() bool {
		id, err = e.eng.CreatePush(context.Background(), "a2a-push/task/cfg", r.srv.URL+"/hook", "client-token-1234",
			map[string]string{"A2A-Notification-Token": "client-token-1234", "Authorization": "Bearer cred"})
		de := kernel.AsError(err)
		return de == nil || de.Kind != kernel.KindUnavailable
	})
	if err != nil {
		t.Fatal(err)
	}
	// Bus events never reach a push endpoint.
	e.publish(t, 3, "agent.spawned")
	bodies := []string{`{"statusUpdate":{"taskId":"t1","status":{"state":"TASK_STATE_WORKING"}}}`,
		`{"statusUpdate":{"taskId":"t1","status":{"state":"TASK_STATE_COMPLETED"}}}`}
	for i, b := range bodies {
		if err := e.eng.Push(context.Background(), id, "a2a-t1-cfg-"+string(rune('0'+i)), "a2a.task.status", []byte(b)); err != nil {
			t.Fatal(err)
		}
	}
	kerneltest.WaitFor(t, "condition", func() bool { return len(r.delivered()) == 2 })
	e.settled(t, id)
	r.check()
	got := r.delivered()
	for i, d := range got {
		st := d.body["statusUpdate"].(map[string]any)["status"].(map[string]any)["state"]
		if d.id != "a2a-t1-cfg-"+string(rune('0'+i)) || (i == 0) != (st == "TASK_STATE_WORKING") {
			t.Fatalf("delivery %d: %+v", i, d)
		}
	}
	for _, kind := range []string{KindOutbound, KindEvent} {
		if views, _ := e.eng.List(context.Background(), kind); len(views) != 0 {
			t.Fatalf("push endpoint listed as %s: %+v", kind, views)
		}
	}
	// Only push endpoints take pushed messages.
	out := e.create(t, r.srv.URL, "", "agent.*")
	if err := e.eng.Push(context.Background(), out.ID, "x", "a2a.task.status", []byte(`{}`)); kernel.AsError(err) == nil {
		t.Fatalf("an outbound webhook took a pushed message: %v", err)
	}
	if err := e.eng.Delete(context.Background(), KindPush, id); err != nil {
		t.Fatal(err)
	}
	if err := e.eng.Push(context.Background(), id, "y", "a2a.task.status", []byte(`{}`)); kernel.AsError(err) == nil || kernel.AsError(err).Kind != kernel.KindNotFound {
		t.Fatalf("push to a deleted endpoint: %v", err)
	}
	// Push endpoints may not subscribe to events.
	evs := []string{"agent.*"}
	if _, err := e.eng.Create(context.Background(), KindPush, Patch{Name: ptr("p"), URL: ptr(r.srv.URL), Events: &evs}); err == nil {
		t.Fatal("a push endpoint with events was created")
	}
}
