package http

import "testing"

// Which task, context and agent a JSON-RPC call names decides where it
// runs in cluster mode: every task method of 1.0 and 0.3 is found by its
// task id, a send by its task, context and (on the shared endpoint only)
// agent; streams are marked for the incremental relay.
func TestA2ARPCTarget(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, body, agentID string
		want                a2aTarget
	}{
		{"GetTask", `{"method":"GetTask","params":{"id":"t1"}}`, "", a2aTarget{taskID: "t1"}},
		{"tasks/get", `{"method":"tasks/get","params":{"id":"t1","historyLength":2}}`, "", a2aTarget{taskID: "t1"}},
		{"CancelTask", `{"method":"CancelTask","params":{"id":"t1"}}`, "", a2aTarget{taskID: "t1"}},
		{"tasks/cancel", `{"method":"tasks/cancel","params":{"id":"t1"}}`, "", a2aTarget{taskID: "t1"}},
		{"SubscribeToTask", `{"method":"SubscribeToTask","params":{"id":"t1"}}`, "", a2aTarget{taskID: "t1", stream: true}},
		{"tasks/resubscribe", `{"method":"tasks/resubscribe","params":{"id":"t1"}}`, "", a2aTarget{taskID: "t1", stream: true}},
		{"1.0 push get", `{"method":"GetTaskPushNotificationConfig","params":{"taskId":"t1","id":"cfg"}}`, "", a2aTarget{taskID: "t1"}},
		{"1.0 push create", `{"method":"CreateTaskPushNotificationConfig","params":{"taskId":"t1","url":"https://x"}}`, "", a2aTarget{taskID: "t1"}},
		{"0.3 push set", `{"method":"tasks/pushNotificationConfig/set","params":{"taskId":"t1","pushNotificationConfig":{}}}`, "", a2aTarget{taskID: "t1"}},
		{"0.3 push get", `{"method":"tasks/pushNotificationConfig/get","params":{"id":"t1","pushNotificationConfigId":"c"}}`, "", a2aTarget{taskID: "t1"}},
		{"send, shared endpoint", `{"method":"SendMessage","params":{"metadata":{"agent_id":"solo"},"message":{"contextId":"c1","parts":[]}}}`, "",
			a2aTarget{contextID: "c1", agentRef: "solo"}},
		{"send, tenant first", `{"method":"message/send","params":{"tenant":"a","message":{"metadata":{"agent_id":"b"}}}}`, "", a2aTarget{agentRef: "a"}},
		{"send, message metadata", `{"method":"message/stream","params":{"message":{"metadata":{"agent_id":"b"}}}}`, "", a2aTarget{agentRef: "b", stream: true}},
		{"send, per-agent endpoint", `{"method":"SendStreamingMessage","params":{"metadata":{"agent_id":"x"},"message":{"taskId":"t9"}}}`, "a1",
			a2aTarget{taskID: "t9", stream: true}},
		{"ListTasks stays here", `{"method":"ListTasks","params":{}}`, "", a2aTarget{}},
		{"not JSON", `{"method":`, "", a2aTarget{}},
		{"params not an object", `{"method":"GetTask","params":[1]}`, "", a2aTarget{}},
	}
	for _, c := range cases {
		if got := a2aRPCTarget([]byte(c.body), c.agentID); got != c.want {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
	}
}
